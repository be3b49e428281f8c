-- dmdb schema, version 1. Tables only; applied with IF NOT EXISTS so reopening never wipes data.
-- Masks are packed BIT strings of length 8*ceil(n_train/8): bit i (get_bit(mask, i)) is train
-- example i; the trailing pad bits are always 0, so bit_count(mask) is the subset size.

CREATE TABLE IF NOT EXISTS dmdb_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS experiments (
    name       VARCHAR PRIMARY KEY,
    n_train    INTEGER NOT NULL CHECK (n_train > 0),
    n_targets  INTEGER NOT NULL CHECK (n_targets > 0),
    alpha      DOUBLE  NOT NULL CHECK (alpha > 0 AND alpha < 1),
    sampling   VARCHAR NOT NULL CHECK (sampling IN ('fixed', 'bernoulli')),
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    config     JSON
);

-- Train examples and targets share one shape: a label and an optional payload.
CREATE TABLE IF NOT EXISTS train_examples (
    experiment  VARCHAR NOT NULL,
    idx         INTEGER NOT NULL,
    label       INTEGER,
    source_id   VARCHAR,
    text        VARCHAR,
    image       BLOB,        -- raw array bytes, C order
    image_shape INTEGER[],
    image_dtype VARCHAR,     -- numpy's dtype.str, e.g. '|u1' (uint8), '<f4' (float32), as dmdb_image_values reads it
    PRIMARY KEY (experiment, idx)
);

CREATE TABLE IF NOT EXISTS targets (
    experiment  VARCHAR NOT NULL,
    idx         INTEGER NOT NULL,
    label       INTEGER,
    source_id   VARCHAR,
    text        VARCHAR,
    image       BLOB,
    image_shape INTEGER[],
    image_dtype VARCHAR,
    PRIMARY KEY (experiment, idx)
);

-- A plan is a seeded, reproducible block of run ids: the mask of run first_run_id + i
-- is a pure function of (seed, role, i, n_train, alpha, sampling).
CREATE TABLE IF NOT EXISTS plans (
    experiment   VARCHAR NOT NULL,
    role         VARCHAR NOT NULL,
    seed         BIGINT  NOT NULL,
    first_run_id BIGINT  NOT NULL,
    n_runs       INTEGER NOT NULL CHECK (n_runs > 0),
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (experiment, role, seed)
);

-- Counterfactual runs planned by dmdb.analyses.plan_counterfactuals: each planned run id with the
-- training seed and the info (verification.run_info) to record it with; its mask is the full train set
-- minus info's removed list. Planning again gives a run not recorded yet its id back, and next_run_id
-- starts after every planned one, so two plans never share an id.
CREATE TABLE IF NOT EXISTS planned_counterfactuals (
    experiment VARCHAR NOT NULL,
    run_id     BIGINT  NOT NULL,
    seed       BIGINT  NOT NULL,
    info       JSON    NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (experiment, run_id)
);

-- One row per recorded run: its subset and its margin on every target, written together.
CREATE TABLE IF NOT EXISTS runs (
    experiment VARCHAR NOT NULL,
    run_id     BIGINT  NOT NULL,
    role       VARCHAR NOT NULL CHECK (role IN ('fit', 'holdout', 'counterfactual')),
    -- zstd: masks are near-random bits; DuckDB's default DICT_FSST analysis of them doubled the
    -- time of recording (checkpoint) and saved nothing; zstd still shrinks near-constant masks.
    mask       BIT     NOT NULL USING COMPRESSION zstd,
    n_kept     INTEGER NOT NULL,
    margins    FLOAT[] NOT NULL,
    seed       BIGINT,
    worker     VARCHAR,
    duration_s DOUBLE,
    info       JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (experiment, run_id)
);

-- Shard files already ingested, so a second `dmdb ingest` skips them without reading them.
CREATE TABLE IF NOT EXISTS ingested_shards (
    name        VARCHAR PRIMARY KEY,
    experiment  VARCHAR NOT NULL,
    n_runs      INTEGER NOT NULL,
    bytes       BIGINT  NOT NULL,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Fits: one row per fitted estimator; per-target results; nonzero weights in raw 0/1 mask units.
CREATE SEQUENCE IF NOT EXISTS fit_id_seq START 1;

CREATE TABLE IF NOT EXISTS fits (
    fit_id         INTEGER PRIMARY KEY DEFAULT nextval('fit_id_seq'),
    experiment     VARCHAR NOT NULL,
    estimator      VARCHAR NOT NULL,
    config         JSON,
    runs_where     VARCHAR,
    targets_where  VARCHAR,
    n_fit_runs     INTEGER,
    n_val_runs     INTEGER,
    n_holdout_runs INTEGER,
    device         VARCHAR,
    seconds        DOUBLE,
    lds            DOUBLE,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS fit_targets (
    fit_id           INTEGER NOT NULL,
    target           INTEGER NOT NULL,
    lam              DOUBLE,  -- chosen regularisation (lambda is a DuckDB keyword)
    bias             DOUBLE NOT NULL,
    val_mse          DOUBLE,
    val_r2           DOUBLE,
    holdout_spearman DOUBLE,
    nnz              INTEGER NOT NULL,
    PRIMARY KEY (fit_id, target)
);

-- fit_order: a fit run's place in the fit's seeded shuffle (0, 1, ...); a learning-curve point of
-- n fit runs used those with fit_order < n. NULL for validation and holdout runs, and for fits
-- stored before the column existed (it is added to such databases on their next writable open).
CREATE TABLE IF NOT EXISTS fit_runs (
    fit_id    INTEGER NOT NULL,
    run_id    BIGINT  NOT NULL,
    split     VARCHAR NOT NULL CHECK (split IN ('fit', 'val', 'holdout')),
    fit_order INTEGER,
    PRIMARY KEY (fit_id, run_id)
);
ALTER TABLE fit_runs ADD COLUMN IF NOT EXISTS fit_order INTEGER;

CREATE TABLE IF NOT EXISTS weights (
    fit_id    INTEGER NOT NULL,
    target    INTEGER NOT NULL,
    train_idx INTEGER NOT NULL,
    weight    FLOAT   NOT NULL
);

-- Learning curve of a fit: the same estimator refitted on growing prefixes of the fit runs
-- (validation and holdout runs unchanged), so users see how LDS grows with the number of runs.
CREATE TABLE IF NOT EXISTS fit_curve (
    fit_id      INTEGER NOT NULL,
    n_fit_runs  INTEGER NOT NULL,
    fraction    DOUBLE  NOT NULL,
    lds         DOUBLE,
    mean_val_r2 DOUBLE,
    seconds     DOUBLE,
    PRIMARY KEY (fit_id, n_fit_runs)
);
