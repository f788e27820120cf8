//! Where shadow samples live: SQLite in WAL mode by default, behind `ShadowStore` so a server
//! database replaces it at scale (`postgres`; `open_store` chooses by the location's form). One row per compared pair — live traffic
//! (`source = 'live'`) and offline benchmark runs (`source = 'offline:…'`) share the layout, so
//! `condenser report` and `condenser-eval equivalence` read both. Keys and auth headers are never
//! part of a sample.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

pub use crate::config::is_server_store;
use crate::equivalence::GateScores;

#[derive(Debug, thiserror::Error)]
#[error("shadow store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(super) fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Opens the store at `location`: a `postgres://` (or `postgresql://`) URL, else a SQLite file
/// path (optionally written `sqlite://path`).
pub fn open_store(location: &str) -> Result<Box<dyn ShadowStore>, StoreError> {
    if is_server_store(location) {
        return Ok(Box::new(super::postgres::PostgresStore::open(location)?));
    }
    let path = location.strip_prefix("sqlite://").unwrap_or(location);
    Ok(Box::new(SqliteStore::open(Path::new(path))?))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// What a pair compares: compression (original vs compressed) or the noise floor (original vs a
/// second original).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleKind {
    Compression,
    Noise,
}

impl SampleKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Compression => "compression",
            Self::Noise => "noise",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        if text == "noise" {
            Self::Noise
        } else {
            Self::Compression
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub id: Option<i64>,
    pub created_ms: i64,
    pub source: String,
    pub route: String,
    pub model: String,
    pub compressor: String,
    /// The leg the client got.
    pub served: String,
    pub kind: SampleKind,
    /// `nl`, `code` or `mixed`.
    pub domain: String,
    pub tokens_original: u64,
    pub tokens_compressed: u64,
    /// The last user text of the request (or its hash), the judge's context.
    pub request: String,
    /// The original answer (or its hash).
    pub reference: String,
    /// The compressed answer, or a second original for a noise pair (or its hash).
    pub candidate: String,
    pub reference_tokens: (u64, u64),
    pub candidate_tokens: (u64, u64),
    pub reference_ms: f64,
    pub candidate_ms: f64,
    /// Cost of the requests sent only for the comparison.
    pub shadow_cost_usd: f64,
    /// Input cost compression saves on this request.
    pub saved_usd: f64,
    pub scores: Option<GateScores>,
    pub passed: Option<bool>,
    pub failed_gates: Vec<String>,
}

/// The persisted rollout decision of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteState {
    pub route: String,
    pub serving: String,
    pub changed_ms: i64,
    pub pass_rate: f64,
    pub samples: u64,
}

pub trait ShadowStore: Send {
    fn insert(&mut self, sample: &Sample) -> Result<i64, StoreError>;
    /// Records a sample's scores; `judge_cost_usd` (what scoring it cost) is added to its
    /// shadowing cost.
    fn set_scores(
        &mut self,
        id: i64,
        scores: &GateScores,
        passed: bool,
        failed_gates: &[String],
        judge_cost_usd: f64,
    ) -> Result<(), StoreError>;
    /// Samples stored but not scored yet (e.g. the process stopped first).
    fn unscored(&mut self) -> Result<Vec<Sample>, StoreError>;
    /// Verdicts of the route's latest scored samples of a kind, newest first.
    fn recent_verdicts(
        &mut self,
        route: &str,
        kind: SampleKind,
        n: usize,
    ) -> Result<Vec<bool>, StoreError>;
    /// Shadowing spend of a route since a time.
    fn spent_since(&mut self, route: &str, since_ms: i64) -> Result<f64, StoreError>;
    fn samples(&mut self, route: Option<&str>, since_ms: i64) -> Result<Vec<Sample>, StoreError>;
    fn route_state(&mut self, route: &str) -> Result<Option<RouteState>, StoreError>;
    fn save_route_state(&mut self, state: &RouteState) -> Result<(), StoreError>;
}

pub struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    compressor TEXT NOT NULL,
    served TEXT NOT NULL,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    tokens_original INTEGER NOT NULL,
    tokens_compressed INTEGER NOT NULL,
    request TEXT NOT NULL,
    reference TEXT NOT NULL,
    candidate TEXT NOT NULL,
    reference_prompt_tokens INTEGER NOT NULL,
    reference_completion_tokens INTEGER NOT NULL,
    candidate_prompt_tokens INTEGER NOT NULL,
    candidate_completion_tokens INTEGER NOT NULL,
    reference_ms REAL NOT NULL,
    candidate_ms REAL NOT NULL,
    shadow_cost_usd REAL NOT NULL,
    saved_usd REAL NOT NULL,
    scores TEXT,
    passed INTEGER,
    failed_gates TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS samples_route_time ON samples (route, created_ms);
CREATE TABLE IF NOT EXISTS route_state (
    route TEXT PRIMARY KEY,
    serving TEXT NOT NULL,
    changed_ms INTEGER NOT NULL,
    pass_rate REAL NOT NULL,
    samples INTEGER NOT NULL
);
";

/// The columns of a sample, in the order both stores read them (`id` first) and write them
/// (`INSERTED`: all but `id`). The SQL around them is each database's own dialect.
pub(super) const COLUMNS: &str = "id, created_ms, source, route, model, compressor, served, \
kind, domain, tokens_original, tokens_compressed, request, reference, candidate, \
reference_prompt_tokens, reference_completion_tokens, candidate_prompt_tokens, \
candidate_completion_tokens, reference_ms, candidate_ms, shadow_cost_usd, saved_usd, scores, \
passed, failed_gates";

pub(super) fn inserted_columns() -> &'static str {
    COLUMNS.trim_start_matches("id, ")
}

fn read_sample(row: &rusqlite::Row<'_>) -> rusqlite::Result<Sample> {
    let kind: String = row.get(7)?;
    let scores: Option<String> = row.get(22)?;
    let failed: String = row.get(24)?;
    Ok(Sample {
        id: Some(row.get(0)?),
        created_ms: row.get(1)?,
        source: row.get(2)?,
        route: row.get(3)?,
        model: row.get(4)?,
        compressor: row.get(5)?,
        served: row.get(6)?,
        kind: SampleKind::parse(&kind),
        domain: row.get(8)?,
        tokens_original: row.get::<_, i64>(9)? as u64,
        tokens_compressed: row.get::<_, i64>(10)? as u64,
        request: row.get(11)?,
        reference: row.get(12)?,
        candidate: row.get(13)?,
        reference_tokens: (row.get::<_, i64>(14)? as u64, row.get::<_, i64>(15)? as u64),
        candidate_tokens: (row.get::<_, i64>(16)? as u64, row.get::<_, i64>(17)? as u64),
        reference_ms: row.get(18)?,
        candidate_ms: row.get(19)?,
        shadow_cost_usd: row.get(20)?,
        saved_usd: row.get(21)?,
        scores: scores.and_then(|s| serde_json::from_str(&s).ok()),
        passed: row.get::<_, Option<i64>>(23)?.map(|p| p != 0),
        failed_gates: failed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Creates `path` with mode 0600 when it does not exist yet (SQLite would use the umask). A
/// file that exists keeps its mode; a path that cannot be created is SQLite's to report.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // The store holds sampled prompts and answers: created readable by its owner only.
        create_private(path);
        let conn = Connection::open(path)?;
        // WAL: readers (`condenser report`) never block the proxy's writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    fn query(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Sample>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(args, read_sample)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

impl ShadowStore for SqliteStore {
    fn insert(&mut self, s: &Sample) -> Result<i64, StoreError> {
        let scores = s
            .scores
            .as_ref()
            .and_then(|v| serde_json::to_string(v).ok());
        self.conn.execute(
            &format!(
                "INSERT INTO samples ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
                 ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
                inserted_columns()
            ),
            params![
                s.created_ms,
                s.source,
                s.route,
                s.model,
                s.compressor,
                s.served,
                s.kind.as_str(),
                s.domain,
                s.tokens_original as i64,
                s.tokens_compressed as i64,
                s.request,
                s.reference,
                s.candidate,
                s.reference_tokens.0 as i64,
                s.reference_tokens.1 as i64,
                s.candidate_tokens.0 as i64,
                s.candidate_tokens.1 as i64,
                s.reference_ms,
                s.candidate_ms,
                s.shadow_cost_usd,
                s.saved_usd,
                scores,
                s.passed,
                s.failed_gates.join(","),
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn set_scores(
        &mut self,
        id: i64,
        scores: &GateScores,
        passed: bool,
        failed_gates: &[String],
        judge_cost_usd: f64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(scores).map_err(|e| StoreError(e.to_string()))?;
        self.conn.execute(
            "UPDATE samples SET scores = ?1, passed = ?2, failed_gates = ?3, \
             shadow_cost_usd = shadow_cost_usd + ?5 WHERE id = ?4",
            params![json, passed, failed_gates.join(","), id, judge_cost_usd],
        )?;
        Ok(())
    }

    fn unscored(&mut self) -> Result<Vec<Sample>, StoreError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM samples WHERE passed IS NULL ORDER BY id"),
            &[],
        )
    }

    fn recent_verdicts(
        &mut self,
        route: &str,
        kind: SampleKind,
        n: usize,
    ) -> Result<Vec<bool>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT passed FROM samples WHERE route = ?1 AND kind = ?2 AND passed IS NOT NULL \
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![route, kind.as_str(), n as i64], |r| {
            r.get::<_, bool>(0)
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn spent_since(&mut self, route: &str, since_ms: i64) -> Result<f64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(shadow_cost_usd), 0) FROM samples WHERE route = ?1 AND created_ms >= ?2",
            params![route, since_ms],
            |r| r.get(0),
        )?)
    }

    fn samples(&mut self, route: Option<&str>, since_ms: i64) -> Result<Vec<Sample>, StoreError> {
        match route {
            Some(route) => self.query(
                &format!("SELECT {COLUMNS} FROM samples WHERE route = ?1 AND created_ms >= ?2 ORDER BY id"),
                &[&route, &since_ms],
            ),
            None => self.query(
                &format!("SELECT {COLUMNS} FROM samples WHERE created_ms >= ?1 ORDER BY id"),
                &[&since_ms],
            ),
        }
    }

    fn route_state(&mut self, route: &str) -> Result<Option<RouteState>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT route, serving, changed_ms, pass_rate, samples FROM route_state WHERE route = ?1",
                params![route],
                |r| {
                    Ok(RouteState {
                        route: r.get(0)?,
                        serving: r.get(1)?,
                        changed_ms: r.get(2)?,
                        pass_rate: r.get(3)?,
                        samples: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()?)
    }

    fn save_route_state(&mut self, s: &RouteState) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO route_state (route, serving, changed_ms, pass_rate, samples) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(route) DO UPDATE SET serving = ?2, \
             changed_ms = ?3, pass_rate = ?4, samples = ?5",
            params![
                s.route,
                s.serving,
                s.changed_ms,
                s.pass_rate,
                s.samples as i64
            ],
        )?;
        Ok(())
    }
}
