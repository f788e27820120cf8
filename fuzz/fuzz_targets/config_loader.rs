//! `proxy.toml` as the operator writes it: parsing and validation either give a configuration
//! or an error naming a key — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = condenser::config::from_toml_str(text) {
        assert!(!error.to_string().is_empty());
    }
});
