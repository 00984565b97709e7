//! `atomic_exp_add` end to end: the JIT'd Vector kernel scales f32 rows in
//! GM by `2^n` bit-identically to `amla_runtime::rescale::exp2_scale_bits`
//! (a partial last block included), and its machine code does it with
//! integer vector adds, not float multiplies.

mod codegen_util;

use amla::compiler::codegen::{CodegenOptions, compile, emit_asm};
use amla::compiler::ir::{Axis, Builder, DType, Dim, Index, InstKind, Kernel, Role, Space, Unit};
use amla::runtime::rescale::{CHECKED_N, exp2_scale_bits};
use amla::runtime::{CoreConfig, Gm, LaunchConfig, launch};
use codegen_util::*;

const RB: u64 = 4; // rows per block
const C: u64 = 37; // columns (scalar tail of 1)

fn kernel() -> Kernel {
    let mut k = Kernel::new("rescale");
    let rd = dim(&mut k, "R");
    let o = tensor(
        &mut k,
        "o",
        DType::F32,
        vec![Dim::Sym(rd), Dim::Const(C)],
        Role::Output,
    );
    let n = tensor(&mut k, "n", DType::I32, vec![Dim::Sym(rd)], Role::Input);
    let top = func(&mut k, Unit::Vector, 1);
    let mut b = Builder::at_end(&mut k, top);
    let zero = iconst(&mut b, 0);
    let rv = b.value(InstKind::DimValue(rd)).unwrap();
    let body = b
        .parallel(
            vec![Axis {
                lo: zero,
                hi: rv,
                step: RB as i64,
            }],
            &["r0"],
        )
        .unwrap();
    let r0 = b.kernel.blocks[body].params[0];
    b.switch_to(body);
    let rows = Index::Range { start: r0, len: RB };
    let nt = placed(
        &mut b,
        InstKind::Load {
            tensor: n,
            index: vec![rows.clone()],
        },
        Space::Ub,
        64,
    );
    b.ins(InstKind::AtomicExpAdd {
        tensor: o,
        index: vec![rows, Index::Full],
        n: nt,
    })
    .unwrap();
    k
}

#[test]
fn atomic_exp_add_kernel_is_bit_identical_to_the_runtime() {
    let k = kernel();
    let ck = compile(&k, &CodegenOptions::verified()).unwrap();
    let rows = 2 * CHECKED_N.len() + 3; // not a multiple of RB
    let mut rng = Rng(0xDEAD_BEEF_1234_5678);
    let specials = [
        0u32,
        0x8000_0000,
        1,
        0x807F_FFFF,
        0x0080_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0001,
        0x7F7F_FFFF,
        0x00FF_FFFF,
        0x3F80_0000,
    ];
    let mut bits: Vec<u32> = (0..rows * C as usize).map(|_| rng.next_u32()).collect();
    for (i, s) in specials.iter().enumerate() {
        bits[i] = *s;
        bits[C as usize + i] = *s;
    }
    let ns: Vec<i32> = (0..rows)
        .map(|r| {
            CHECKED_N
                .get(r % (CHECKED_N.len() + 1))
                .copied()
                .unwrap_or(-3)
        })
        .collect();
    let data: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let mut gm = Gm::new();
    let o = gm.add_from("o", &data).unwrap();
    gm.add_from("n", &ns).unwrap();
    let cfg = LaunchConfig::default()
        .with_cores(2)
        .with_vector_sub_blocks(1)
        .with_dims(vec![rows as i64]);
    let items = ck.work_items(&[rows as i64]).unwrap();
    assert_eq!(items, rows.div_ceil(RB as usize) as u64);
    launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    let got = gm.slice::<f32>(o).unwrap();
    for (r, &nr) in ns.iter().enumerate() {
        for c in 0..C as usize {
            let i = r * C as usize + c;
            let want = exp2_scale_bits(f32::from_bits(bits[i]), nr).to_bits();
            assert_eq!(got[i].to_bits(), want, "x = {:#010x}, n = {nr}", bits[i]);
        }
    }
}

#[test]
fn atomic_exp_add_machine_code_is_integer_adds() {
    let asm = emit_asm(&kernel(), &CodegenOptions::default()).unwrap();
    assert!(asm.contains("paddd"), "no integer vector add:\n{asm}");
    for fmul in ["mulps", "mulss", "mulpd", "mulsd"] {
        assert!(!asm.contains(fmul), "a float multiply `{fmul}`:\n{asm}");
    }
    // Fixed target: identical text on every host.
    assert_eq!(
        asm,
        emit_asm(&kernel(), &CodegenOptions::default()).unwrap()
    );
}
