//! The kernel module index (`floor::kmod`), read by `mkimage` from a kernel
//! package and by the node's modprobe from the disk: never a panic, and
//! for every module its load plan names known modules once each, and the
//! same set its closure does.
//!
//! The input is index text with the files' lines mixed: `alias …` lines go
//! to `modules.alias`, `softdep …` to `modules.softdep`, other lines ending
//! in `.ko` without a `:` to `modules.builtin`, the rest to `modules.dep`.
//! So each of a kernel's real `modules.*` files is a seed as it is
//! (`floor/tests/data/kmod`), and so is their concatenation.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use floor::kmod::{IndexTexts, ModuleIndex};
use libfuzzer_sys::fuzz_target;

fn split(text: &str) -> IndexTexts {
    let mut texts = IndexTexts::default();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let file = if trimmed.starts_with("alias ") || trimmed.starts_with('#') {
            &mut texts.alias
        } else if trimmed.starts_with("softdep ") {
            &mut texts.softdep
        } else if trimmed.ends_with(".ko") && !trimmed.contains(':') {
            &mut texts.builtin
        } else {
            &mut texts.dep
        };
        file.push_str(line);
        file.push('\n');
    }
    texts
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let index = ModuleIndex::parse(Path::new("/lib/modules/fuzz"), split(&text));
    let _ = index.ensure_well_formed();
    let names: Vec<String> = index
        .modules()
        .map(|(name, _)| name.to_string())
        .take(16)
        .collect();
    for name in &names {
        if let Ok(plan) = index.load_plan(name) {
            let planned: BTreeSet<&str> = plan.iter().map(|(m, _)| m.as_str()).collect();
            assert_eq!(
                planned.len(),
                plan.len(),
                "{name}: a module twice in {plan:?}"
            );
            for module in &planned {
                assert!(
                    index.contains(module),
                    "{name}: plan names unknown {module}"
                );
            }
            assert!(
                planned.contains(name.as_str()),
                "{name}: not in its own plan"
            );
            let closure = index
                .closure(&[name])
                .expect("a name with a plan has a closure");
            let closure: BTreeSet<&str> = closure.iter().map(String::as_str).collect();
            assert_eq!(closure, planned, "{name}: closure and plan differ");
        }
    }
    for (pattern, _) in index.aliases().iter().take(8) {
        let _ = index.modules_for_alias(pattern);
        let _ = index.lookup(pattern);
    }
});
