//! Compile-time constant evaluation over the AST: literals, names (looked up
//! by the caller: consts and bound dims), `+ - * / %`, unary `-`, `inf` and
//! `sqrt`, `min` and `max`. Integer arithmetic is checked (overflow and division by zero are
//! E0012); an int meeting a float becomes a float. Anything else (a loop
//! variable, a tensor read, `exp`) is not constant (E0010).

use super::hir::ConstValue;
use crate::diag::{Code, Diagnostic};
use crate::syntax::Span;
use crate::syntax::ast::{BinOp, Expr, ExprKind, UnaryOp};

/// Resolves a name inside a constant expression.
pub type Lookup<'a> = dyn Fn(&str, Span) -> Result<ConstValue, Diagnostic> + 'a;

/// Evaluates `e`; `lookup` resolves names. Recursion is bounded by the
/// parser's depth limit.
pub fn eval(e: &Expr, lookup: &Lookup<'_>) -> Result<ConstValue, Diagnostic> {
    use ConstValue::{Float, Int};
    match &e.kind {
        ExprKind::Int(v) => Ok(Int(*v)),
        ExprKind::Float(v) => Ok(Float(*v)),
        ExprKind::Name(n) => lookup(n, e.span),
        ExprKind::Unary(UnaryOp::Neg, a) => match eval(a, lookup)? {
            Int(v) => v.checked_neg().map(Int).ok_or_else(|| overflow(e.span)),
            Float(v) => Ok(Float(-v)),
        },
        ExprKind::Binary(op, a, b) => {
            let (x, y) = (eval(a, lookup)?, eval(b, lookup)?);
            binary(*op, x, y, e.span)
        }
        ExprKind::Call(f, args) if f.name == "sqrt" => match args.as_slice() {
            [a] => Ok(Float(eval(a, lookup)?.as_f64().sqrt())),
            _ => Err(
                Diagnostic::new(Code::WrongArity, e.span, "`sqrt` takes 1 argument")
                    .label(format!("{} arguments given", args.len())),
            ),
        },
        ExprKind::Call(f, args) if f.name == "min" || f.name == "max" => match args.as_slice() {
            [a, b] => {
                let (x, y) = (eval(a, lookup)?, eval(b, lookup)?);
                let lt = x.as_f64() < y.as_f64();
                let pick_x = if f.name == "min" { lt } else { !lt };
                Ok(match (x, y) {
                    (Int(_), Int(_)) => {
                        if pick_x {
                            x
                        } else {
                            y
                        }
                    }
                    _ => Float(if pick_x { x.as_f64() } else { y.as_f64() }),
                })
            }
            _ => Err(Diagnostic::new(
                Code::WrongArity,
                e.span,
                format!("`{}` takes 2 arguments", f.name),
            )
            .label(format!("{} arguments given", args.len()))),
        },
        _ => Err(not_constant(e.span)),
    }
}

/// `x op y` on constants.
pub fn binary(
    op: BinOp,
    x: ConstValue,
    y: ConstValue,
    span: Span,
) -> Result<ConstValue, Diagnostic> {
    use ConstValue::{Float, Int};
    match (x, y) {
        (Int(a), Int(b)) => {
            let r = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div | BinOp::Rem if b == 0 => {
                    return Err(Diagnostic::new(
                        Code::ConstEval,
                        span,
                        "division by zero in a constant",
                    )
                    .label("the divisor is 0"));
                }
                BinOp::Div => a.checked_div(b),
                BinOp::Rem => a.checked_rem(b),
                _ => return Err(not_constant(span)),
            };
            r.map(Int).ok_or_else(|| overflow(span))
        }
        (a, b) => {
            let (a, b) = (a.as_f64(), b.as_f64());
            Ok(Float(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                BinOp::Rem => a % b,
                _ => return Err(not_constant(span)),
            }))
        }
    }
}

fn overflow(span: Span) -> Diagnostic {
    Diagnostic::new(Code::ConstEval, span, "integer overflow in a constant")
        .label("does not fit in a 64-bit signed integer")
}

/// "not a compile-time constant" at `span`.
pub fn not_constant(span: Span) -> Diagnostic {
    Diagnostic::new(Code::NotConstant, span, "expected a compile-time constant").label(
        "only literals, consts, bound dims, arithmetic, `sqrt`, `min` and `max` are allowed here",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::StmtKind;

    /// Evaluates the value of `const X = <src>;` with `A = 6`, `F = 0.5`.
    fn ev(src: &str) -> Result<ConstValue, Code> {
        let text = format!("kernel k() -> () {{ parallel b in 0..1 {{ let x = {src}; }} }}");
        let k = crate::syntax::parse(&text).map_err(|d| d[0].code)?;
        let StmtKind::Parallel { body, .. } = &k.body[0].kind else {
            return Err(Code::Syntax);
        };
        let StmtKind::Let { value, .. } = &body.stmts[0].kind else {
            return Err(Code::Syntax);
        };
        let lookup = |n: &str, sp: Span| match n {
            "A" => Ok(ConstValue::Int(6)),
            "F" => Ok(ConstValue::Float(0.5)),
            _ => Err(Diagnostic::new(Code::UnknownName, sp, "unknown")),
        };
        eval(value, &lookup).map_err(|d| d.code)
    }

    #[test]
    fn integers_stay_integers() {
        assert_eq!(ev("2 * A + 1"), Ok(ConstValue::Int(13)));
        assert_eq!(ev("A / 4"), Ok(ConstValue::Int(1)));
        assert_eq!(ev("-A % 4"), Ok(ConstValue::Int(-2)));
    }

    #[test]
    fn floats_and_sqrt() {
        assert_eq!(ev("1.0 / sqrt(64.0)"), Ok(ConstValue::Float(0.125)));
        assert_eq!(ev("A * F"), Ok(ConstValue::Float(3.0)));
        assert_eq!(ev("-inf"), Ok(ConstValue::Float(f64::NEG_INFINITY)));
        assert_eq!(ev("sqrt(A - 2)"), Ok(ConstValue::Float(2.0)));
    }

    #[test]
    fn errors_have_codes() {
        assert_eq!(ev("A / 0"), Err(Code::ConstEval));
        assert_eq!(ev("9223372036854775807 + 1"), Err(Code::ConstEval));
        assert_eq!(ev("exp(1.0)"), Err(Code::NotConstant));
        assert_eq!(ev("A < 2"), Err(Code::NotConstant));
        assert_eq!(ev("sqrt(1.0, 2.0)"), Err(Code::WrongArity));
        assert_eq!(ev("min(256 / A, 7)"), Ok(ConstValue::Int(7)));
        assert_eq!(ev("max(1, 256 / (A * 128))"), Ok(ConstValue::Int(1)));
        assert_eq!(ev("min(1.5, 2)"), Ok(ConstValue::Float(1.5)));
        assert_eq!(ev("max(1, 2, 3)"), Err(Code::WrongArity));
        assert_eq!(ev("B"), Err(Code::UnknownName));
    }
}
