use amla_compiler::{check, diag, ir, lower, passes, target};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let show = std::env::args().nth(2).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap();
    let src = diag::SourceFile::new(path.clone(), text);
    let h = match check::check(&src, &check::Defines::new()) {
        Ok(h) => h,
        Err(d) => {
            eprintln!("{}", diag::render_plain(&src, &d));
            return;
        }
    };
    let mut k = lower::lower(&h).unwrap();
    let stage = |k: &ir::Kernel, name: &str| {
        let t = ir::print::print(k);
        if let Err(e) = ir::verify::verify(k) {
            println!("VERIFY FAIL after {name}: {e}");
        }
        match ir::parse::parse(&t) {
            Ok(k2) => {
                if ir::print::print(&k2) != t {
                    println!("ROUNDTRIP MISMATCH after {name}");
                }
            }
            Err(e) => println!("PARSE FAIL after {name}: {e}"),
        }
        if show == name {
            println!("{t}");
        }
    };
    stage(&k, "lower");
    let _ = passes::mul_to_add::run(&mut k, &Default::default()).unwrap();
    stage(&k, "mul-to-add");
    if let Err(e) = passes::split::run(&mut k) {
        println!("split error: {e}");
        return;
    }
    stage(&k, "split");
    let t = target::Target::builtin("ascend910b").unwrap();
    match passes::plan_memory::plan_memory(&mut k, &t, &Default::default()) {
        Ok(r) => println!("{r:?}"),
        Err(e) => {
            println!("plan error: {e}");
            return;
        }
    }
    stage(&k, "plan-memory");
}
