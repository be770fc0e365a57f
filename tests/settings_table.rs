//! The README's settings table is the one rendered from the settings crate's
//! data (`shellflip::settings::SETTINGS`), so the two cannot drift.
//!
//! `SHELLFLIP_BLESS=1 cargo test --test settings_table` rewrites the
//! README's table from the data.

use std::path::Path;

const START: &str = "<!-- settings table: generated from shellflip-settings; \
                     `SHELLFLIP_BLESS=1 cargo test --test settings_table` rewrites it -->\n";
const END: &str = "<!-- end of settings table -->";

#[test]
fn readme_table_is_the_settings_data() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md is readable");
    let start = readme
        .find(START)
        .map(|i| i + START.len())
        .expect("the README marks the start of its settings table");
    let end = start
        + readme[start..]
            .find(END)
            .expect("the README marks the end of its settings table");
    let table = shellflip::settings::markdown_table();
    // A blank line on either side keeps the markers out of the table.
    if readme[start..end] == format!("\n{table}\n") {
        return;
    }
    if std::env::var_os("SHELLFLIP_BLESS").is_some_and(|v| v == "1") {
        let updated = format!("{}\n{table}\n{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    panic!(
        "the settings table in README.md differs from shellflip_settings::SETTINGS.\n\
         README:\n{}\nfrom the data:\n{table}\n\
         Run `SHELLFLIP_BLESS=1 cargo test --test settings_table` and review the README.",
        &readme[start..end]
    );
}
