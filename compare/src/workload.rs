//! The workloads every engine runs: the same flags, users and contexts, described
//! once here and loaded by each engine from its own document format.

/// Users in the rotation.
pub const USERS: usize = 10_000;
/// Flags in the memory mix.
pub const MEMORY_FLAGS: usize = 10_000;
/// Flags in the mixed set W5 evaluates for one user.
pub const MIXED_FLAGS: usize = 1_000;

pub const PLANS: [&str; 4] = ["free", "team", "pro", "enterprise"];
pub const COUNTRIES: [&str; 6] = ["DE", "FR", "US", "GB", "JP", "BR"];

/// A UUID-shaped id (36 characters), distinct for each `n`.
pub fn uuid(n: u64) -> String {
    let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    let l = h.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let (a, b, c, d) = (h >> 32, h & 0xffff, l >> 52, (l >> 40) & 0xfff);
    format!("{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{:012x}", l & 0xffff_ffff_ffff)
}

/// One user: a UUID-shaped id and two attributes.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub plan: &'static str,
    pub country: &'static str,
}

pub fn users() -> Vec<User> {
    (0..USERS)
        .map(|n| User { id: uuid(n as u64), plan: PLANS[n % 4], country: COUNTRIES[(n / 4) % 6] })
        .collect()
}

/// A boolean flag as every engine can express it. Each serves `true` or `false`.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Serves `true` when switched on; switched off it serves `false`.
    Bool { on: bool },
    /// Serves `true` to `on_bp` basis points (of 10,000) of users, sticky on the user id.
    Rollout { on_bp: u32 },
    /// Serves `true` when the attribute (`plan` or `country`) is one of the values.
    Rule { attribute: &'static str, values: Vec<&'static str> },
    /// Serves `true` when the user id is one of the ids.
    List { ids: Vec<String> },
}

/// `(key, spec)` for every flag an engine holds.
pub type Flags = Vec<(String, Spec)>;

/// Flag `i` of the mixed set: a quarter each of bool (half switched off), rollouts
/// at 5–95 %, 3-value `in` rules on `plan` or `country`, and distinct 100-id lists.
pub fn mixed(i: usize) -> Spec {
    match i % 4 {
        0 => Spec::Bool { on: i.is_multiple_of(8) },
        1 => Spec::Rollout { on_bp: 500 + (i as u32 * 37) % 9001 },
        2 if i % 8 == 2 => Spec::Rule { attribute: "plan", values: vec!["pro", "enterprise", "team"] },
        2 => Spec::Rule { attribute: "country", values: vec!["DE", "FR", "US"] },
        _ => Spec::List { ids: (0..100).map(|j| uuid(1_000_000 + (i * 100 + j) as u64)).collect() },
    }
}

/// The mixed set of `n` flags, keys `flag_0`..
pub fn mixed_flags(n: usize) -> Flags {
    (0..n).map(|i| (format!("flag_{i}"), mixed(i))).collect()
}

/// The timed flags: W1..W4 by key, and the mixed set for W5.
pub fn timed_flags(users: &[User]) -> Flags {
    let mut flags = mixed_flags(MIXED_FLAGS);
    flags.push(("w1".into(), Spec::Bool { on: true }));
    flags.push(("w2".into(), Spec::Rollout { on_bp: 1_000 }));
    flags.push(("w3".into(), Spec::Rule { attribute: "plan", values: vec!["pro", "enterprise"] }));
    // The first 100 users are on the list; the rest are not.
    flags.push(("w4".into(), Spec::List { ids: users[..100].iter().map(|u| u.id.clone()).collect() }));
    flags
}

/// What `spec` serves `user` when the rollout bucket is unknown (`None` for rollouts).
pub fn expected(spec: &Spec, user: &User) -> Option<bool> {
    match spec {
        Spec::Bool { on } => Some(*on),
        Spec::Rollout { .. } => None,
        Spec::Rule { attribute, values } => {
            let v = if *attribute == "plan" { user.plan } else { user.country };
            Some(values.contains(&v))
        }
        Spec::List { ids } => Some(ids.contains(&user.id)),
    }
}

/// One evaluation engine, loaded from its own document format.
pub trait Engine: Sized {
    /// Its name in the tables.
    const NAME: &'static str;
    /// The engine's own per-user context, built once per user, untimed.
    type Ctx;
    /// What the application holds to name a flag (a key, or a typed handle).
    type Key;
    /// The engine's own document for `flags` (the JSON its SDK downloads).
    fn document(flags: &Flags) -> String;
    /// Loads the document, dropping it before returning.
    fn load(document: String) -> Self;
    fn context(&self, user: &User) -> Self::Ctx;
    fn key(&self, key: &str) -> Self::Key;
    /// The flag's boolean value for this context: the whole evaluation the
    /// engine's SDK does for one read, flag lookup by key included.
    fn eval(&self, key: &Self::Key, ctx: &Self::Ctx) -> bool;
    /// Every one of `keys` for this context, into `out`, the way the SDK reads many
    /// flags for one user (one evaluation each unless the engine batches).
    fn eval_all(&self, keys: &[Self::Key], ctx: &Self::Ctx, out: &mut Vec<bool>) {
        out.clear();
        out.extend(keys.iter().map(|k| self.eval(std::hint::black_box(k), ctx)));
    }
}
