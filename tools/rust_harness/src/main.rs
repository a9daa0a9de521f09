//! Times the Rust crate rotortree (0.15 and 0.17, renamed `rt15` / `rt17`) on the workloads
//! `rotortree bench` measures in Python, with the same leaves, and prints one JSON object per
//! command.
//!
//!     rotortree-harness 'insert_many v=15 arity=4 leaves=1000000 reps=5' ...
//!     rotortree-harness < commands.txt        (one command per line; answers flushed per line)
//!
//! Reading commands from stdin lets `rotortree bench` keep one harness process per build and
//! interleave its calls with its own measurements. See README.md for the commands and keys.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::time::Instant;

type Hash = [u8; 32];
const MAX_DEPTH: usize = 32;
const DEMO_SEED: &[u8] = b"rotortree demo";

// ---- command line -------------------------------------------------------------------------

struct Cmd {
    op: String,
    keys: HashMap<String, String>,
}

impl Cmd {
    fn parse(line: &str) -> Result<Cmd, String> {
        let mut words = line.split_whitespace();
        let op = words.next().ok_or("empty command")?.to_string();
        let mut keys = HashMap::new();
        for word in words {
            let (k, v) = word.split_once('=').ok_or(format!("expected key=value, got {word:?}"))?;
            keys.insert(k.to_string(), v.to_string());
        }
        Ok(Cmd { op, keys })
    }

    fn num(&self, key: &str, default: Option<u64>) -> Result<u64, String> {
        match self.keys.get(key) {
            Some(text) => text.replace('_', "").parse().map_err(|_| format!("{key}: not a number: {text:?}")),
            None => default.ok_or(format!("missing {key}=")),
        }
    }

    fn text<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.keys.get(key).map(String::as_str).unwrap_or(default)
    }

    fn seed(&self) -> Result<Vec<u8>, String> {
        match self.keys.get("seed") {
            None => Ok(DEMO_SEED.to_vec()),
            Some(hex) => from_hex(hex),
        }
    }
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("odd-length hex {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("bad hex {text:?}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---- JSON output --------------------------------------------------------------------------

struct Json(String);

impl Json {
    fn new(op: &str) -> Json {
        Json(format!("{{\"ok\":true,\"op\":\"{op}\""))
    }
    fn num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.0, ",\"{key}\":{value}");
        self
    }
    fn text(&mut self, key: &str, value: &str) -> &mut Self {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(self.0, ",\"{key}\":\"{escaped}\"");
        self
    }
    fn list(&mut self, key: &str, values: &[u64]) -> &mut Self {
        let items: Vec<String> = values.iter().map(u64::to_string).collect();
        let _ = write!(self.0, ",\"{key}\":[{}]", items.join(","));
        self
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn error_json(message: &str) -> String {
    let escaped = message.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{{\"ok\":false,\"error\":\"{escaped}\"}}")
}

// ---- process facts ------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Usage {
    user_us: u64,
    system_us: u64,
    minor_faults: u64,
}

fn usage() -> Usage {
    // SAFETY: getrusage only writes the struct it is given.
    let mut raw: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut raw) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Usage { user_us: us(raw.ru_utime), system_us: us(raw.ru_stime), minor_faults: raw.ru_minflt as u64 }
}

/// "fresh": hand freed memory back to the OS before the timed call, so that it faults in
/// every page it writes; "reused": keep it (the trim threshold is raised at start-up).
fn prepare_memory(mode: &str) -> Result<(), String> {
    match mode {
        "reused" => Ok(()),
        "fresh" => {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free heap pages.
            unsafe {
                libc::malloc_trim(0);
            }
            Ok(())
        }
        other => Err(format!("memory must be reused or fresh, got {other:?}")),
    }
}

fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning. M_TRIM_THRESHOLD = -1 in glibc.
    unsafe {
        libc::mallopt(-1, 1 << 30);
    }
}

// ---- leaves -------------------------------------------------------------------------------

/// Leaf streams, generated once and grown on demand: a longer XOF output starts with the
/// shorter one, so a prefix of the stream is the stream of fewer leaves.
#[derive(Default)]
struct Leaves {
    streams: HashMap<(String, Vec<u8>), Vec<Hash>>,
}

impl Leaves {
    fn get(&mut self, rule: &str, seed: &[u8], count: usize) -> Result<&[Hash], String> {
        let key = (rule.to_string(), seed.to_vec());
        let have = self.streams.get(&key).map_or(0, Vec::len);
        if have < count {
            let fresh: Vec<Hash> = match rule {
                // `rotortree demo` and rotortree.benchmarks: BLAKE3(seed) extended to 32*count bytes.
                "demo" => {
                    let mut bytes = vec![0u8; 32 * count];
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(seed);
                    hasher.finalize_xof().fill(&mut bytes);
                    bytes.chunks_exact(32).map(|c| c.try_into().unwrap()).collect()
                }
                // The rule of the anchors' published roots: leaf i = BLAKE3(u64 i, little-endian).
                "index" => (0..count as u64).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect(),
                other => return Err(format!("leafrule must be demo or index, got {other:?}")),
            };
            self.streams.insert(key.clone(), fresh);
        }
        Ok(&self.streams[&key][..count])
    }
}

/// Deterministic indices in 0..size (splitmix64): the same on every run.
fn indices(count: usize, size: u64) -> Vec<u64> {
    let mut state: u64 = 20240607;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % size
        })
        .collect()
}

// ---- threads ------------------------------------------------------------------------------

/// threads=0 calls the crate directly; threads=k runs the call inside a rayon pool of k
/// threads (parallel build only), timed inside the pool so pool hand-off is not counted.
struct Pools {
    #[cfg(feature = "parallel")]
    pools: HashMap<usize, rayon::ThreadPool>,
}

impl Pools {
    fn new() -> Pools {
        Pools {
            #[cfg(feature = "parallel")]
            pools: HashMap::new(),
        }
    }

    fn run<R: Send>(&mut self, threads: usize, work: impl FnOnce() -> R + Send) -> Result<R, String> {
        if threads == 0 {
            return Ok(work());
        }
        #[cfg(feature = "parallel")]
        {
            let pool = match self.pools.entry(threads) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?,
                ),
            };
            Ok(pool.install(work))
        }
        #[cfg(not(feature = "parallel"))]
        {
            drop(work);
            Err("threads > 0 needs the parallel build".to_string())
        }
    }
}

/// Runs `f` over the items, on the current rayon pool in the parallel build.
#[cfg(feature = "parallel")]
fn map_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    items.par_iter().map(f).collect()
}

#[cfg(not(feature = "parallel"))]
fn map_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    items.iter().map(f).collect()
}

/// How many items pass `f`, on the current rayon pool in the parallel build.
#[cfg(feature = "parallel")]
fn count_all<T: Sync>(items: &[T], f: impl Fn(&T) -> bool + Sync + Send) -> usize {
    use rayon::prelude::*;
    items.par_iter().filter(|item| f(item)).count()
}

#[cfg(not(feature = "parallel"))]
fn count_all<T: Sync>(items: &[T], f: impl Fn(&T) -> bool + Sync + Send) -> usize {
    items.iter().filter(|item| f(item)).count()
}

// ---- the workloads, once per crate version --------------------------------------------------

struct Ctx<'a> {
    cmd: &'a Cmd,
    leaves: &'a mut Leaves,
    pools: &'a mut Pools,
}

impl Ctx<'_> {
    fn reps(&self) -> Result<(usize, usize), String> {
        Ok((self.cmd.num("warmup", Some(1))? as usize, self.cmd.num("reps", Some(5))? as usize))
    }
    fn threads(&self) -> Result<usize, String> {
        Ok(self.cmd.num("threads", Some(0))? as usize)
    }
    fn tree_leaves(&mut self) -> Result<Vec<Hash>, String> {
        let count = self.cmd.num("leaves", None)? as usize;
        let seed = self.cmd.seed()?;
        let rule = self.cmd.text("leafrule", "demo").to_string();
        Ok(self.leaves.get(&rule, &seed, count)?.to_vec())
    }
}

/// Times `block` warmup + reps times and returns the timed samples in nanoseconds.
fn sample(warmup: usize, reps: usize, mut block: impl FnMut() -> Result<u64, String>) -> Result<Vec<u64>, String> {
    for _ in 0..warmup {
        block()?;
    }
    (0..reps).map(|_| block()).collect()
}

macro_rules! workloads {
    ($module:ident, $krate:ident, $verifier:expr) => {
        mod $module {
            use super::*;
            use $krate as rt;

            type Tree<const N: usize> = rt::LeanIMT<rt::Blake3Hasher, N, MAX_DEPTH>;

            fn new_tree<const N: usize>() -> Box<Tree<N>> {
                Box::new(Tree::<N>::new(rt::Blake3Hasher))
            }

            fn built<const N: usize>(leaves: &[Hash]) -> Result<Box<Tree<N>>, String> {
                let mut tree = new_tree::<N>();
                tree.insert_many(leaves).map_err(|e| format!("{e:?}"))?;
                Ok(tree)
            }

            fn err(e: rt::TreeError) -> String {
                format!("{e:?}")
            }

            pub fn run<const N: usize>(ctx: &mut Ctx, out: &mut Json) -> Result<(), String> {
                let (warmup, reps) = ctx.reps()?;
                let threads = ctx.threads()?;
                let op = ctx.cmd.op.clone();
                match op.as_str() {
                    "root" => {
                        let leaves = ctx.tree_leaves()?;
                        let tree = ctx.pools.run(threads, || built::<N>(&leaves))??;
                        out.text("root", &hex(&tree.root().unwrap_or_default())).num("size", tree.size());
                    }
                    "insert_many" => {
                        // A fresh tree per call, created untimed.
                        let leaves = ctx.tree_leaves()?;
                        let memory = ctx.cmd.text("memory", "reused").to_string();
                        let mut root = [0u8; 32];
                        let mut faults = Vec::new();
                        let samples = sample(warmup, reps, || {
                            prepare_memory(&memory)?;
                            let mut tree = new_tree::<N>();
                            let before = usage();
                            let (elapsed, result) = ctx.pools.run(threads, || {
                                let start = Instant::now();
                                let result = tree.insert_many(&leaves);
                                (start.elapsed().as_nanos() as u64, result)
                            })?;
                            faults.push(usage().minor_faults - before.minor_faults);
                            root = result.map_err(err)?;
                            drop(tree);
                            Ok(elapsed)
                        })?;
                        out.list("samples_ns", &samples).list("minor_faults", &faults[warmup..]).text("root", &hex(&root));
                    }
                    "growth" => {
                        // Batches appended to one tree that keeps growing, with user and
                        // system time (all threads of the process) per batch.
                        let leaves = ctx.tree_leaves()?;
                        let batch = ctx.cmd.num("batch", None)? as usize;
                        if batch == 0 {
                            return Err("batch must be >= 1".into());
                        }
                        prepare_memory(ctx.cmd.text("memory", "reused"))?;
                        let mut tree = new_tree::<N>();
                        let (mut ns, mut user, mut system, mut faults) = (vec![], vec![], vec![], vec![]);
                        for part in leaves.chunks(batch) {
                            let before = usage();
                            let (elapsed, result) = ctx.pools.run(threads, || {
                                let start = Instant::now();
                                let result = tree.insert_many(part);
                                (start.elapsed().as_nanos() as u64, result)
                            })?;
                            let after = usage();
                            result.map_err(err)?;
                            ns.push(elapsed);
                            user.push(after.user_us - before.user_us);
                            system.push(after.system_us - before.system_us);
                            faults.push(after.minor_faults - before.minor_faults);
                        }
                        out.list("samples_ns", &ns).list("user_us", &user).list("system_us", &system)
                            .list("minor_faults", &faults).text("root", &hex(&tree.root().unwrap_or_default()))
                            .num("size", tree.size());
                    }
                    "insert" => {
                        // Single inserts appended to a tree of `leaves` leaves; each block
                        // inserts the same `count` leaves again, so the tree keeps growing.
                        let leaves = ctx.tree_leaves()?;
                        let count = ctx.cmd.num("count", None)? as usize;
                        let single_seed = from_hex(ctx.cmd.text("single_seed", &hex(b"single inserts")))?;
                        let singles = ctx.leaves.get("demo", &single_seed, count)?.to_vec();
                        let mut tree = ctx.pools.run(threads, || built::<N>(&leaves))??;
                        let samples = sample(warmup, reps, || {
                            let start = Instant::now();
                            for leaf in &singles {
                                tree.insert(*leaf).map_err(err)?;
                            }
                            Ok(start.elapsed().as_nanos() as u64)
                        })?;
                        out.list("samples_ns", &samples).num("calls_per_sample", count)
                            .text("root", &hex(&tree.root().unwrap_or_default())).num("size", tree.size());
                    }
                    "snapshot" => {
                        let leaves = ctx.tree_leaves()?;
                        let count = ctx.cmd.num("count", Some(1000))? as usize;
                        let tree = ctx.pools.run(threads, || built::<N>(&leaves))??;
                        // Each snapshot is dropped before the next one, untimed.
                        let samples = sample(warmup, reps, || {
                            let mut total = 0u64;
                            for _ in 0..count {
                                let start = Instant::now();
                                let snap = tree.snapshot();
                                total += start.elapsed().as_nanos() as u64;
                                drop(std::hint::black_box(snap));
                            }
                            Ok(total)
                        })?;
                        out.list("samples_ns", &samples).num("calls_per_sample", count);
                    }
                    "generate_proof" | "verify" => {
                        let leaves = ctx.tree_leaves()?;
                        let count = ctx.cmd.num("count", Some(2000))? as usize;
                        let tree = ctx.pools.run(threads, || built::<N>(&leaves))??;
                        let snap = tree.snapshot();
                        let picks = indices(count, snap.size());
                        let proofs: Vec<_> = picks.iter().map(|&i| snap.generate_proof(i)).collect::<Result<_, _>>().map_err(err)?;
                        let verifier = $verifier;
                        let mut valid = true;
                        let samples = sample(warmup, reps, || {
                            let start = Instant::now();
                            if op == "verify" {
                                for proof in &proofs {
                                    valid &= std::hint::black_box(proof.verify(&verifier).map_err(err)?);
                                }
                            } else {
                                for &index in &picks {
                                    std::hint::black_box(snap.generate_proof(index).map_err(err)?);
                                }
                            }
                            Ok(start.elapsed().as_nanos() as u64)
                        })?;
                        if !valid {
                            return Err("a generated proof did not verify".into());
                        }
                        out.list("samples_ns", &samples).num("calls_per_sample", count);
                    }
                    "proofs_batch" => {
                        // generate_proof over many indices with par_iter (iter in the
                        // sequential build): each proof consumed where it is made
                        // (generate_ns), then all of them collected into a Vec (collect_ns,
                        // the crate's proofs are MAX_DEPTH levels wide), then the collected
                        // ones verified the same way (verify_ns).
                        let leaves = ctx.tree_leaves()?;
                        let count = ctx.cmd.num("count", Some(100_000))? as usize;
                        let tree = ctx.pools.run(threads, || built::<N>(&leaves))??;
                        let snap = tree.snapshot();
                        let picks = indices(count, snap.size());
                        let verifier = $verifier;
                        let (mut generate, mut collect, mut verify) = (Vec::new(), Vec::new(), Vec::new());
                        for rep in 0..warmup + reps {
                            let (times, ok) = ctx.pools.run(threads, || {
                                let start = Instant::now();
                                let made = count_all(&picks, |&i| std::hint::black_box(snap.generate_proof(i)).is_ok());
                                let g = start.elapsed().as_nanos() as u64;
                                let start = Instant::now();
                                let proofs = map_all(&picks, |&i| snap.generate_proof(i));
                                let c = start.elapsed().as_nanos() as u64;
                                let start = Instant::now();
                                let valid = count_all(&proofs, |p| matches!(p.as_ref().map(|p| p.verify(&verifier)), Ok(Ok(true))));
                                let v = start.elapsed().as_nanos() as u64;
                                drop(proofs);
                                ([g, c, v], made == count && valid == count)
                            })?;
                            if !ok {
                                return Err("a batch proof failed or did not verify".into());
                            }
                            if rep >= warmup {
                                generate.push(times[0]);
                                collect.push(times[1]);
                                verify.push(times[2]);
                            }
                        }
                        out.list("generate_ns", &generate).list("collect_ns", &collect).list("verify_ns", &verify)
                            .num("calls_per_sample", count);
                    }
                    other => return Err(format!("unknown command {other:?}")),
                }
                Ok(())
            }
        }
    };
}

workloads!(v15, rt15, rt15::TreeHasher::new(rt15::Blake3Hasher));
workloads!(v17, rt17, rt17::Blake3Hasher);

fn dispatch(line: &str, leaves: &mut Leaves, pools: &mut Pools) -> Result<String, String> {
    let cmd = Cmd::parse(line)?;
    if cmd.op == "info" {
        let mut out = Json::new("info");
        out.num("parallel", cfg!(feature = "parallel")).num("max_depth", MAX_DEPTH)
            .num("avx512_compiled_out", cfg!(feature = "avx2-bound"))
            .text("crates", "rotortree 0.15 (rt15), rotortree 0.17 (rt17)")
            .text("profile", if cfg!(debug_assertions) { "debug" } else { "release" });
        return Ok(out.finish());
    }
    if cmd.op == "blake3" {
        // blake3::hash of one buffer on this thread (no rayon): the bound's rate, in the
        // build's BLAKE3 (runtime SIMD detection, or AVX-512 compiled out).
        let bytes = cmd.num("bytes", Some(64 << 20))? as usize;
        let (warmup, reps) = (cmd.num("warmup", Some(1))? as usize, cmd.num("reps", Some(5))? as usize);
        let buffer = leaves.get("demo", &cmd.seed()?, bytes.div_ceil(32))?.as_flattened()[..bytes].to_vec();
        let samples = sample(warmup, reps, || {
            let start = Instant::now();
            std::hint::black_box(blake3::hash(std::hint::black_box(&buffer)));
            Ok(start.elapsed().as_nanos() as u64)
        })?;
        let mut out = Json::new("blake3");
        out.num("bytes", bytes).list("samples_ns", &samples).num("avx512_compiled_out", cfg!(feature = "avx2-bound"));
        return Ok(out.finish());
    }
    let version = cmd.num("v", None)?;
    let arity = cmd.num("arity", Some(4))?;
    let mut out = Json::new(&cmd.op);
    out.num("v", version).num("arity", arity).num("threads", cmd.num("threads", Some(0))?);
    let mut ctx = Ctx { cmd: &cmd, leaves, pools };
    match (version, arity) {
        (15, 2) => v15::run::<2>(&mut ctx, &mut out),
        (15, 4) => v15::run::<4>(&mut ctx, &mut out),
        (15, 8) => v15::run::<8>(&mut ctx, &mut out),
        (15, 16) => v15::run::<16>(&mut ctx, &mut out),
        (17, 2) => v17::run::<2>(&mut ctx, &mut out),
        (17, 4) => v17::run::<4>(&mut ctx, &mut out),
        (17, 8) => v17::run::<8>(&mut ctx, &mut out),
        (17, 16) => v17::run::<16>(&mut ctx, &mut out),
        _ => Err(format!("v must be 15 or 17 and arity 2, 4, 8 or 16; got v={version} arity={arity}")),
    }?;
    Ok(out.finish())
}

fn main() {
    keep_freed_memory();
    let mut leaves = Leaves::default();
    let mut pools = Pools::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let mut failed = false;
    let mut answer = |line: &str| {
        let text = dispatch(line, &mut leaves, &mut pools).unwrap_or_else(|e| {
            failed = true;
            error_json(&e)
        });
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{text}");
        let _ = lock.flush();
    };
    if args.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if !line.trim().is_empty() {
                answer(&line);
            }
        }
    } else {
        for line in &args {
            answer(line);
        }
    }
    std::process::exit(i32::from(failed));
}
