//! The shadow store on PostgreSQL, for several replicas: `[shadow] store =
//! "postgres://user@host/db"`. Same rows as the SQLite store, so `condenser report` and
//! `condenser-eval equivalence` read either, and every replica's samples (and auto-rollout
//! decisions) land in one place. The schema is created and upgraded by numbered migrations
//! recorded in `condenser_migrations`, each applied once, in a transaction. A password is never
//! in the file: it comes from `PGPASSWORD`, as for `psql`.
//!
//! The client is the synchronous `postgres` crate: the store is only ever used from blocking
//! threads (`Shadow::with_store` runs it on the blocking pool), like SQLite.

use postgres::{Client, NoTls, Row};

use super::store::{
    inserted_columns, RouteState, Sample, SampleKind, ShadowStore, StoreError, COLUMNS,
};
use crate::equivalence::GateScores;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::new(e.to_string())
    }
}

/// Each entry upgrades the schema by one version; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE samples (
    id BIGSERIAL PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    compressor TEXT NOT NULL,
    served TEXT NOT NULL,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    tokens_original BIGINT NOT NULL,
    tokens_compressed BIGINT NOT NULL,
    request TEXT NOT NULL,
    reference TEXT NOT NULL,
    candidate TEXT NOT NULL,
    reference_prompt_tokens BIGINT NOT NULL,
    reference_completion_tokens BIGINT NOT NULL,
    candidate_prompt_tokens BIGINT NOT NULL,
    candidate_completion_tokens BIGINT NOT NULL,
    reference_ms DOUBLE PRECISION NOT NULL,
    candidate_ms DOUBLE PRECISION NOT NULL,
    shadow_cost_usd DOUBLE PRECISION NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    scores TEXT,
    passed BOOLEAN,
    failed_gates TEXT NOT NULL DEFAULT ''
);
CREATE INDEX samples_route_time ON samples (route, created_ms);
CREATE TABLE route_state (
    route TEXT PRIMARY KEY,
    serving TEXT NOT NULL,
    changed_ms BIGINT NOT NULL,
    pass_rate DOUBLE PRECISION NOT NULL,
    samples BIGINT NOT NULL
);
",
    "
CREATE TABLE route_overrides (
    id INT PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL,
    changed_ms BIGINT NOT NULL
);
",
];

pub struct PostgresStore {
    config: postgres::Config,
    client: Client,
}

impl PostgresStore {
    /// Connects (the password from `PGPASSWORD` when the URL has none) and migrates.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::new(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        config.connect_timeout(std::time::Duration::from_secs(5));
        let mut client = config.connect(NoTls)?;
        migrate(&mut client)?;
        Ok(Self { config, client })
    }

    /// The client, reconnected first when the server closed the connection (a restart or an
    /// outage): the store recovers by itself once the server is back.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_closed() {
            self.client = self.config.connect(NoTls)?;
        }
        Ok(&mut self.client)
    }
}

/// The admin API's route overrides shared by replicas (`server.overrides_store`): one JSON
/// document and when it was changed. A write older than the stored one is ignored, so the
/// latest change wins whichever replica stores it last.
impl PostgresStore {
    pub fn overrides(&mut self) -> Result<Option<(String, i64)>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT document, changed_ms FROM route_overrides WHERE id = 1",
            &[],
        )?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub fn save_overrides(&mut self, document: &str, changed_ms: i64) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO route_overrides (id, document, changed_ms) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document, \
             changed_ms = EXCLUDED.changed_ms WHERE route_overrides.changed_ms < EXCLUDED.changed_ms",
            &[&document, &changed_ms],
        )?;
        Ok(())
    }
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS condenser_migrations (version INT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i32 + 1;
        let mut tx = client.transaction()?;
        // Replicas starting together: the lock makes one migrate and the others see it done.
        tx.batch_execute("LOCK TABLE condenser_migrations IN EXCLUSIVE MODE")?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM condenser_migrations WHERE version = $1",
                &[&version],
            )?
            .is_some();
        if !done {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO condenser_migrations (version, applied_ms) VALUES ($1, $2)",
                &[&version, &super::now_ms()],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn read_sample(row: &Row) -> Result<Sample, StoreError> {
    let u = |i: usize| -> Result<u64, StoreError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
    let kind: String = row.try_get(7)?;
    let scores: Option<String> = row.try_get(22)?;
    let failed: String = row.try_get(24)?;
    Ok(Sample {
        id: Some(row.try_get(0)?),
        created_ms: row.try_get(1)?,
        source: row.try_get(2)?,
        route: row.try_get(3)?,
        model: row.try_get(4)?,
        compressor: row.try_get(5)?,
        served: row.try_get(6)?,
        kind: SampleKind::parse(&kind),
        domain: row.try_get(8)?,
        tokens_original: u(9)?,
        tokens_compressed: u(10)?,
        request: row.try_get(11)?,
        reference: row.try_get(12)?,
        candidate: row.try_get(13)?,
        reference_tokens: (u(14)?, u(15)?),
        candidate_tokens: (u(16)?, u(17)?),
        reference_ms: row.try_get(18)?,
        candidate_ms: row.try_get(19)?,
        shadow_cost_usd: row.try_get(20)?,
        saved_usd: row.try_get(21)?,
        scores: scores.and_then(|s| serde_json::from_str(&s).ok()),
        passed: row.try_get(23)?,
        failed_gates: failed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

impl PostgresStore {
    fn query(
        &mut self,
        sql: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Sample>, StoreError> {
        self.client()?
            .query(sql, args)?
            .iter()
            .map(read_sample)
            .collect()
    }
}

impl ShadowStore for PostgresStore {
    fn insert(&mut self, s: &Sample) -> Result<i64, StoreError> {
        let scores = s
            .scores
            .as_ref()
            .and_then(|v| serde_json::to_string(v).ok());
        let n = |v: u64| v as i64;
        let row = self.client()?.query_one(
            &format!(
                "INSERT INTO samples ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) RETURNING id",
                inserted_columns()
            ),
            &[
                &s.created_ms,
                &s.source,
                &s.route,
                &s.model,
                &s.compressor,
                &s.served,
                &s.kind.as_str(),
                &s.domain,
                &n(s.tokens_original),
                &n(s.tokens_compressed),
                &s.request,
                &s.reference,
                &s.candidate,
                &n(s.reference_tokens.0),
                &n(s.reference_tokens.1),
                &n(s.candidate_tokens.0),
                &n(s.candidate_tokens.1),
                &s.reference_ms,
                &s.candidate_ms,
                &s.shadow_cost_usd,
                &s.saved_usd,
                &scores,
                &s.passed,
                &s.failed_gates.join(","),
            ],
        )?;
        Ok(row.try_get(0)?)
    }

    fn set_scores(
        &mut self,
        id: i64,
        scores: &GateScores,
        passed: bool,
        failed_gates: &[String],
        judge_cost_usd: f64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(scores).map_err(|e| StoreError::new(e.to_string()))?;
        self.client()?.execute(
            "UPDATE samples SET scores = $1, passed = $2, failed_gates = $3, \
             shadow_cost_usd = shadow_cost_usd + $5 WHERE id = $4",
            &[
                &json,
                &passed,
                &failed_gates.join(","),
                &id,
                &judge_cost_usd,
            ],
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
        let rows = self.client()?.query(
            "SELECT passed FROM samples WHERE route = $1 AND kind = $2 AND passed IS NOT NULL \
             ORDER BY id DESC LIMIT $3",
            &[&route, &kind.as_str(), &(n as i64)],
        )?;
        rows.iter()
            .map(|r| r.try_get::<_, bool>(0).map_err(StoreError::from))
            .collect()
    }

    fn spent_since(&mut self, route: &str, since_ms: i64) -> Result<f64, StoreError> {
        let row = self.client()?.query_one(
            "SELECT COALESCE(SUM(shadow_cost_usd), 0)::DOUBLE PRECISION FROM samples \
             WHERE route = $1 AND created_ms >= $2",
            &[&route, &since_ms],
        )?;
        Ok(row.try_get(0)?)
    }

    fn samples(&mut self, route: Option<&str>, since_ms: i64) -> Result<Vec<Sample>, StoreError> {
        match route {
            Some(route) => self.query(
                &format!(
                    "SELECT {COLUMNS} FROM samples WHERE route = $1 AND created_ms >= $2 ORDER BY id"
                ),
                &[&route, &since_ms],
            ),
            None => self.query(
                &format!("SELECT {COLUMNS} FROM samples WHERE created_ms >= $1 ORDER BY id"),
                &[&since_ms],
            ),
        }
    }

    fn route_state(&mut self, route: &str) -> Result<Option<RouteState>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT route, serving, changed_ms, pass_rate, samples FROM route_state WHERE route = $1",
            &[&route],
        )?;
        row.map(|r| {
            Ok(RouteState {
                route: r.try_get(0)?,
                serving: r.try_get(1)?,
                changed_ms: r.try_get(2)?,
                pass_rate: r.try_get(3)?,
                samples: r.try_get::<_, i64>(4)?.max(0) as u64,
            })
        })
        .transpose()
    }

    fn save_route_state(&mut self, s: &RouteState) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO route_state (route, serving, changed_ms, pass_rate, samples) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (route) DO UPDATE SET serving = $2, \
             changed_ms = $3, pass_rate = $4, samples = $5",
            &[
                &s.route,
                &s.serving,
                &s.changed_ms,
                &s.pass_rate,
                &(s.samples as i64),
            ],
        )?;
        Ok(())
    }
}
