//! The kernel's module index (`/lib/modules/<release>/modules.*`), read one
//! way for everyone: `mkimage` choosing which modules a node OS carries and
//! the node's own modprobe deciding what to load must agree on every line.
//!
//! - `modules.dep`: `path: dependency paths…`, deepest dependency last.
//! - `modules.alias`: `alias <fnmatch pattern> <module>`.
//! - `modules.softdep`: `softdep <module> pre: <names…> post: <names…>`;
//!   as kmod does, words before the first `pre:`/`post:` are ignored, and a
//!   name may be a module or an alias (matched as a pattern).
//! - `modules.builtin`: modules compiled into the kernel (nothing to load).
//!
//! Lines that do not have these shapes are skipped and recorded as
//! [`Problem`]s: a node keeps loading what it can, and a tool that writes
//! an index for others ([`ModuleIndex::ensure_well_formed`]) refuses them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Module names use `-` and `_` interchangeably; the canonical form has `_`.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path in `modules.dep` (`kernel/fs/ext4/ext4.ko` → `ext4`).
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

/// Why an index could not be read or a module not resolved.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    /// An index file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// A name is neither a module, an alias of one, nor built in.
    #[error("kernel module {name:?} is not in {} (neither a module name, an alias, nor built in)", dir.display())]
    Missing {
        /// The name asked for.
        name: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// Dependencies nest deeper than any kernel's: the index is broken (a
    /// real `modules.dep` lists every dependency of a module on its line),
    /// and a plan cut at some depth would load a module before its own
    /// dependencies.
    #[error("kernel module {name:?} in {}: dependencies nest more than {MAX_DEPTH} deep", dir.display())]
    TooDeep {
        /// The name asked for.
        name: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// A line of an index file has the wrong shape (strict readers only).
    #[error("{}: line {}: {}", dir.join(problem.file).display(), problem.line, problem.reason)]
    Malformed {
        /// The module directory.
        dir: PathBuf,
        /// The first problem found.
        problem: Problem,
    },
}

/// A line of an index file that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `modules.dep`, `modules.alias` or `modules.softdep`.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// One module of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path relative to the module directory, as in `modules.dep`.
    pub path: String,
    /// Hard dependencies as module names, deepest last (as `modules.dep` lists them).
    pub deps: Vec<String>,
    /// Position in `modules.dep`, to keep its order when writing a subset.
    pub order: usize,
}

/// Modules to load before (`pre`) and after (`post`) a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Softdep {
    /// Names (modules or aliases) loaded before.
    pub pre: Vec<String>,
    /// Names (modules or aliases) loaded after.
    pub post: Vec<String>,
}

/// The text of a kernel's index files (missing optional files are empty).
#[derive(Debug, Clone, Default)]
pub struct IndexTexts {
    /// `modules.dep` (required).
    pub dep: String,
    /// `modules.alias`.
    pub alias: String,
    /// `modules.softdep`.
    pub softdep: String,
    /// `modules.builtin`.
    pub builtin: String,
    /// `modules.order`.
    pub order: String,
}

/// The parsed index of one kernel's modules.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    release: String,
    modules: BTreeMap<String, Module>,
    /// (pattern, module), in file order.
    aliases: Vec<(String, String)>,
    softdeps: BTreeMap<String, Softdep>,
    builtin: BTreeSet<String>,
    texts: IndexTexts,
    problems: Vec<Problem>,
}

/// A load plan being made: modules planned (in order), and the modules on
/// the path being walked.
#[derive(Debug, Default)]
struct Walk {
    order: Vec<(String, bool)>,
    done: HashSet<String>,
    visiting: HashSet<String>,
}

/// How deep dependency chains may go before the index counts as broken
/// (real kernels stay under 10; a cycle is cut by the visited set anyway).
const MAX_DEPTH: usize = 64;

fn read_required(path: &Path) -> Result<String, KmodError> {
    fs::read_to_string(path).map_err(|source| KmodError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<String, KmodError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(KmodError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl ModuleIndex {
    /// Reads the index of `dir` (`/lib/modules/<release>`): `modules.dep` is
    /// required, the other files are read when present.
    pub fn load(dir: &Path) -> Result<ModuleIndex, KmodError> {
        let texts = IndexTexts {
            dep: read_required(&dir.join("modules.dep"))?,
            alias: read_optional(&dir.join("modules.alias"))?,
            softdep: read_optional(&dir.join("modules.softdep"))?,
            builtin: read_optional(&dir.join("modules.builtin"))?,
            order: read_optional(&dir.join("modules.order"))?,
        };
        Ok(ModuleIndex::parse(dir, texts))
    }

    /// Parses index texts as if they were read from `dir`. Never fails:
    /// malformed lines are skipped and listed by [`problems`](Self::problems).
    pub fn parse(dir: &Path, texts: IndexTexts) -> ModuleIndex {
        let mut index = ModuleIndex {
            dir: dir.to_path_buf(),
            release: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..ModuleIndex::default()
        };
        index.parse_dep(&texts.dep);
        index.parse_alias(&texts.alias);
        index.parse_softdep(&texts.softdep);
        index.builtin = texts
            .builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_of_path)
            .collect();
        index.texts = texts;
        index
    }

    fn problem(&mut self, file: &'static str, line: usize, reason: &str) {
        self.problems.push(Problem {
            file,
            line: line + 1,
            reason: reason.to_string(),
        });
    }

    fn parse_dep(&mut self, text: &str) {
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((path, rest)) = line.split_once(':') else {
                self.problem("modules.dep", number, "expected `path: dependencies`");
                continue;
            };
            let path = path.trim();
            if path.is_empty() || path.split_whitespace().count() != 1 {
                self.problem("modules.dep", number, "expected one module path before `:`");
                continue;
            }
            let deps = rest.split_whitespace().map(name_of_path).collect();
            self.modules.insert(
                name_of_path(path),
                Module {
                    path: path.to_string(),
                    deps,
                    order: number,
                },
            );
        }
    }

    fn parse_alias(&mut self, text: &str) {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["alias", pattern, module] => {
                    self.aliases.push((pattern.to_string(), normalise(module)))
                }
                _ => self.problem("modules.alias", number, "expected `alias PATTERN MODULE`"),
            }
        }
    }

    fn parse_softdep(&mut self, text: &str) {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                self.problem(
                    "modules.softdep",
                    number,
                    "expected `softdep MODULE pre: … post: …`",
                );
                continue;
            };
            let entry = self.softdeps.entry(normalise(module)).or_default();
            let mut list: Option<&mut Vec<String>> = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut entry.pre),
                    "post:" => list = Some(&mut entry.post),
                    other => {
                        if let Some(list) = list.as_deref_mut() {
                            list.push(other.to_string());
                        }
                    }
                }
            }
        }
    }

    /// The module directory this index was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel release (the module directory's name).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The lines that were skipped.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Fails on the first skipped line: for tools that pass an index on.
    pub fn ensure_well_formed(&self) -> Result<(), KmodError> {
        match self.problems.first() {
            None => Ok(()),
            Some(p) => Err(KmodError::Malformed {
                dir: self.dir.clone(),
                problem: p.clone(),
            }),
        }
    }

    /// The texts the index was parsed from.
    pub fn texts(&self) -> &IndexTexts {
        &self.texts
    }

    /// Every module, by name.
    pub fn modules(&self) -> impl Iterator<Item = (&str, &Module)> {
        self.modules.iter().map(|(n, m)| (n.as_str(), m))
    }

    /// One module by name (either spelling).
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalise(name))
    }

    /// Whether `name` is a module of this index (not an alias, not built in).
    pub fn contains(&self, name: &str) -> bool {
        self.module(name).is_some()
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalise(name))
    }

    /// (pattern, module) pairs in file order.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// Soft dependencies by module name.
    pub fn softdeps(&self) -> &BTreeMap<String, Softdep> {
        &self.softdeps
    }

    /// The file of a module (absolute when the index was loaded from a directory).
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.module(name).map(|m| self.dir.join(&m.path))
    }

    /// Modules whose alias pattern matches `text` (a device's modalias or
    /// an alias name such as `crypto-crc32c`), in file order, each once.
    pub fn modules_for_alias(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern.as_bytes(), text.as_bytes()) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// The modules a name stands for: itself if it is a module; nothing if
    /// it is built in; else the modules of this index its aliases match.
    /// `None` when it is none of these.
    pub fn lookup(&self, name: &str) -> Option<Vec<String>> {
        let normal = normalise(name);
        if self.modules.contains_key(&normal) {
            return Some(vec![normal]);
        }
        if self.builtin.contains(&normal) {
            return Some(Vec::new());
        }
        let found: Vec<String> = self
            .modules_for_alias(name)
            .into_iter()
            .filter(|m| self.modules.contains_key(m))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// What to load, in order, to load `name`: soft `pre` modules, hard
    /// dependencies deepest first, the module, soft `post` modules. Each
    /// entry says whether it is there only as a soft dependency (its
    /// failure to load is not fatal). A built-in name needs nothing.
    pub fn load_plan(&self, name: &str) -> Result<Vec<(String, bool)>, KmodError> {
        let found = self.lookup(name).ok_or_else(|| self.missing(name))?;
        let mut walk = Walk::default();
        for module in found {
            self.visit(&module, false, &mut walk, 0)?;
        }
        Ok(walk.order)
    }

    /// [`load_plan`](Self::load_plan) without the soft marks.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, KmodError> {
        Ok(self.load_plan(name)?.into_iter().map(|(m, _)| m).collect())
    }

    fn missing(&self, name: &str) -> KmodError {
        KmodError::Missing {
            name: name.to_string(),
            dir: self.dir.clone(),
        }
    }

    /// Adds `module` to the plan after what it needs. A module on the
    /// current path (a dependency cycle) is skipped; one that failed (a
    /// soft dependency that cannot be had) leaves nothing behind, so a
    /// module that needs it for real still meets the failure.
    fn visit(
        &self,
        module: &str,
        soft: bool,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<(), KmodError> {
        if depth > MAX_DEPTH {
            return Err(KmodError::TooDeep {
                name: module.to_string(),
                dir: self.dir.clone(),
            });
        }
        if walk.done.contains(module) || !walk.visiting.insert(module.to_string()) {
            return Ok(());
        }
        let result = self.visit_needs(module, soft, walk, depth);
        walk.visiting.remove(module);
        result
    }

    fn visit_needs(
        &self,
        module: &str,
        soft: bool,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<(), KmodError> {
        let entry = self
            .modules
            .get(module)
            .ok_or_else(|| self.missing(module))?;
        let softdep = self.softdeps.get(module);
        for name in softdep.map(|s| s.pre.as_slice()).unwrap_or_default() {
            for real in self.lookup(name).unwrap_or_default() {
                // A soft dependency that cannot be had is not an error.
                let _ = self.visit(&real, true, walk, depth + 1);
            }
        }
        for dep in entry.deps.iter().rev() {
            self.visit(dep, soft, walk, depth + 1)?;
        }
        walk.done.insert(module.to_string());
        walk.order.push((module.to_string(), soft));
        for name in softdep.map(|s| s.post.as_slice()).unwrap_or_default() {
            for real in self.lookup(name).unwrap_or_default() {
                let _ = self.visit(&real, true, walk, depth + 1);
            }
        }
        Ok(())
    }

    /// The modules in `wanted` plus, transitively, their hard and soft
    /// dependencies: everything any [`load_plan`](Self::load_plan) of a
    /// member can ask for. A wanted name or hard dependency that is missing
    /// is an error; a soft dependency that is missing is skipped.
    pub fn closure<S: AsRef<str>>(&self, wanted: &[S]) -> Result<BTreeSet<String>, KmodError> {
        let mut selected = BTreeSet::new();
        for name in wanted {
            for (module, _) in self.load_plan(name.as_ref())? {
                selected.insert(module);
            }
        }
        // A module reached twice is visited once per plan, so soft
        // dependencies of everything selected are in: every plan of a
        // member is covered by the plans that selected it.
        Ok(selected)
    }
}

/// `fnmatch(3)` without flags: `*`, `?` and `[...]` classes (with `!`/`^`
/// and ranges); an unclosed `[` matches itself.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let (mut star_p, mut star_t) = (usize::MAX, 0usize);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = p;
                    star_t = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => match match_class(&pattern[p..], text[t]) {
                    Some((true, next)) => {
                        p += next;
                        t += 1;
                        continue;
                    }
                    Some((false, _)) => {}
                    None if text[t] == b'[' => {
                        p += 1;
                        t += 1;
                        continue;
                    }
                    None => {}
                },
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        if star_p == usize::MAX {
            return false;
        }
        p = star_p + 1;
        star_t += 1;
        t = star_t;
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` class at the start of `pattern`: (matched, length of
/// the class), or `None` when the class is not closed.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let ch = pattern[i];
        if ch == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if ch <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko:
kernel/fs/isofs/isofs.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias fs-iso9660 isofs
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
";
    const SOFTDEP: &str = "\
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep cifs gcm
softdep virtio_net post: nonexistent
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            Path::new("/lib/modules/6.1.0-test"),
            IndexTexts {
                dep: DEP.into(),
                alias: ALIAS.into(),
                softdep: SOFTDEP.into(),
                builtin: "kernel/fs/nls/nls_base.ko\n".into(),
                order: String::new(),
            },
        )
    }

    #[test]
    fn dependencies_load_deepest_first() {
        let i = index();
        assert_eq!(i.release(), "6.1.0-test");
        assert_eq!(
            i.load_order("virtio-net").unwrap(),
            ["failover", "net_failover", "virtio_net"]
        );
    }

    #[test]
    fn soft_dependencies_resolve_through_aliases_and_are_marked_soft() {
        let plan = index().load_plan("ext4").unwrap();
        let names: Vec<&str> = plan.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            names,
            [
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert!(plan[..2].iter().all(|(_, soft)| *soft), "{plan:?}");
        assert!(plan[2..].iter().all(|(_, soft)| !soft), "{plan:?}");
    }

    #[test]
    fn words_before_pre_are_ignored_as_kmod_does() {
        let i = index();
        assert_eq!(i.softdeps()["cifs"], Softdep::default());
        // A post: name that exists nowhere is skipped, not an error.
        assert_eq!(
            i.load_order("virtio_net").unwrap().last().unwrap(),
            "virtio_net"
        );
    }

    #[test]
    fn closure_is_what_the_plans_load() {
        let i = index();
        let set = i.closure(&["ext4", "fs-iso9660", "nls_base"]).unwrap();
        let names: Vec<&str> = set.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "crc16",
                "crc32c_generic",
                "crc32c_intel",
                "ext4",
                "isofs",
                "jbd2",
                "mbcache"
            ]
        );
        let e = i.closure(&["ext4", "no_such_mod"]).unwrap_err();
        assert!(e.to_string().contains("no_such_mod"), "{e}");
    }

    #[test]
    fn device_aliases_find_their_drivers() {
        let i = index();
        assert_eq!(
            i.modules_for_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(
            i.modules_for_alias("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
        assert!(i.modules_for_alias("pci:v00008086d0000100Esv*").is_empty());
        assert!(matches!(
            i.load_order("e1000"),
            Err(KmodError::Missing { .. })
        ));
    }

    #[test]
    fn malformed_lines_are_skipped_and_reported() {
        let i = ModuleIndex::parse(
            Path::new("/lib/modules/x"),
            IndexTexts {
                dep: "kernel/a.ko:\nno colon here\n two words.ko: x\nkernel/b.ko: kernel/a.ko\n"
                    .into(),
                alias: "alias onlyone\nalias p a\n".into(),
                softdep: "softdep\nsoftdep b pre: a\n".into(),
                ..IndexTexts::default()
            },
        );
        assert_eq!(i.load_order("b").unwrap(), ["a", "b"]);
        let lines: Vec<(&str, usize)> = i.problems().iter().map(|p| (p.file, p.line)).collect();
        assert_eq!(
            lines,
            [
                ("modules.dep", 2),
                ("modules.dep", 3),
                ("modules.alias", 1),
                ("modules.softdep", 1)
            ]
        );
        let e = i.ensure_well_formed().unwrap_err().to_string();
        assert!(e.starts_with("/lib/modules/x/modules.dep: line 2: "), "{e}");
        assert!(index().ensure_well_formed().is_ok());
    }

    #[test]
    fn dependency_cycles_end() {
        let i = ModuleIndex::parse(
            Path::new("/x"),
            IndexTexts {
                dep: "a.ko: b.ko\nb.ko: a.ko\n".into(),
                softdep: "softdep a pre: a post: b\n".into(),
                ..IndexTexts::default()
            },
        );
        assert_eq!(i.load_order("a").unwrap(), ["b", "a"]);
    }

    #[test]
    fn globs_behave_like_fnmatch() {
        assert!(glob_match(
            b"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            b"usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"
        ));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b", b"acc"));
        assert!(glob_match(b"[x", b"[x"));
    }

    /// The Debian kernel's own index files (installed by scripts/setup).
    fn debian_index() -> Option<ModuleIndex> {
        let mut dirs: Vec<PathBuf> = fs::read_dir("/lib/modules")
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("modules.dep").is_file() && p.join("modules.softdep").is_file())
            .collect();
        dirs.sort();
        ModuleIndex::load(dirs.last()?).ok()
    }

    #[test]
    fn debians_real_index_parses_cleanly_and_plans_agree_with_closures() {
        let Some(i) = debian_index() else {
            eprintln!("SKIP: no Debian kernel module index under /lib/modules (scripts/setup installs linux-image-amd64)");
            return;
        };
        assert_eq!(i.problems(), &[], "{}", i.dir().display());
        assert!(i.modules().count() > 1000);
        // ext4 wants crc32c through an alias in a `pre:` soft dependency:
        // without crc32c_generic, ext4 with metadata_csum does not mount.
        let plan = i.load_order("ext4").unwrap();
        assert!(plan.contains(&"crc32c_generic".to_string()), "{plan:?}");
        assert_eq!(plan.last().map(String::as_str), Some("ext4"));
        let net = i.load_order("virtio_net").unwrap();
        assert!(
            net.ends_with(&[
                "failover".into(),
                "net_failover".into(),
                "virtio_net".into()
            ]),
            "{net:?}"
        );
        // For every module: the plan and the closure name the same modules,
        // every hard dependency comes before its user, and nothing is missing.
        for (name, module) in i.modules() {
            let plan = i.load_order(name).unwrap();
            let closure = i.closure(&[name]).unwrap();
            let planned: BTreeSet<String> = plan.iter().cloned().collect();
            assert_eq!(planned, closure, "{name}");
            let at = |m: &str| plan.iter().position(|p| p == m);
            for dep in &module.deps {
                assert!(at(dep) < at(name), "{name}: {dep} after it in {plan:?}");
            }
        }
    }
}
