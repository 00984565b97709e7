use amla_compiler::{check, diag, driver, run};
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let src = diag::SourceFile::new(path.clone(), text);
    let mut opts = driver::CompileOptions::new().unwrap();
    let mut d = check::Defines::new();
    for a in args {
        let (n, v) = check::Defines::parse_arg(&a).unwrap();
        d.insert(n, v);
    }
    opts.defines = d;
    let c = match driver::compile(&src, &opts) {
        Ok(c) => c,
        Err(e) => {
            println!("compile error: {e}");
            return;
        }
    };
    let ex = match run::exec::Executable::new(&c, &opts.target) {
        Ok(x) => x,
        Err(e) => {
            println!("{e}");
            return;
        }
    };
    let specs = ex.input_specs().unwrap();
    let inputs: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (n, dt, s))| {
            run::inputs::generate(n, *dt, s, None, &Default::default(), i as u64).unwrap()
        })
        .collect();
    let t = std::time::Instant::now();
    match ex.run(&inputs, &Default::default()) {
        Ok(o) => {
            println!("ran in {:?}", t.elapsed());
            let kind = run::ReferenceKind::from_source(&src.text).unwrap().unwrap();
            let scale = c
                .hir
                .consts
                .iter()
                .find(|c| c.name == "scale")
                .unwrap()
                .value
                .as_f64();
            let dv = *o.outputs[0].shape.last().unwrap();
            let e = run::reference_kind::expected(kind, &inputs, scale, dv).unwrap();
            let out = o.outputs[0].data.to_f64();
            let lse = o.outputs[1].data.to_f64();
            let mut m = 0f64;
            for (a, b) in out.iter().zip(&e.out) {
                m = m.max((a - b).abs());
            }
            let mut ml = 0f64;
            for (a, b) in lse.iter().zip(&e.lse) {
                ml = ml.max((a - b).abs());
            }
            println!(
                "max abs out err {m:e}, lse err {ml:e}; out[0..4]={:?} ref={:?}",
                &out[..4],
                &e.out[..4]
            );
        }
        Err(e) => println!("run error: {e}"),
    }
}
