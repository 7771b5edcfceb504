//! Writes the seed corpus of the fuzz targets (`fuzz/seeds/<target>/`): the
//! wire examples of docs/protocol/fims.md and the broker simulations of
//! `fims_server::sim::seed_inputs`.
//!
//! `cargo run -p fims-server --example fuzz_seeds -- fuzz/seeds`

use std::path::PathBuf;

use fims_server::sim::{seed_inputs, SPEC_VECTORS};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("the vectors are hex"))
        .collect()
}

fn main() -> std::io::Result<()> {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| "fuzz/seeds".into(), Into::into);
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    for (i, v) in SPEC_VECTORS.iter().enumerate() {
        write("decode", &format!("spec_vector_{i}"), &hex(v))?;
    }
    // The sub vector's body (after the 12-byte header and "sub" "cops").
    let sub = hex(SPEC_VECTORS[3]);
    write("sub_body", "spec_cops_ess", &sub[12 + 3 + 4..])?;
    let many: Vec<fims::Subscription> = (0..255)
        .map(|i| fims::Subscription::all(format!("/u//{i}/")))
        .collect();
    let mut body = Vec::new();
    fims::codec::encode_sub_body(&many, &mut body).expect("255 URIs fit");
    write("sub_body", "255_uris", &body)?;
    for (name, bytes) in seed_inputs() {
        write("broker", name, &bytes)?;
    }
    println!("seeds written under {}", root.display());
    Ok(())
}
