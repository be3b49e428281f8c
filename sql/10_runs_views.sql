-- Views over recorded runs for ad hoc SQL. Re-created by the writable open that first sees a
-- changed sql/ (a new dmdb release): a view or macro dropped or redefined by hand stays so until then.

-- The long form: one row per (run, target); target is INTEGER as in every other table (range() gives BIGINT).
CREATE OR REPLACE VIEW margins_long AS
SELECT experiment, run_id, role,
       unnest(range(len(margins))::INTEGER[]) AS target,
       unnest(margins)             AS margin
FROM runs;

-- Every planned run id, recorded or not: the seeded plans' runs, and the counterfactual runs planned
-- by plan_counterfactuals (plan_seed and plan_index NULL: their masks come from planned_counterfactuals).
CREATE OR REPLACE VIEW planned_runs AS
SELECT p.experiment, p.first_run_id + i AS run_id, p.role, p.seed AS plan_seed, i AS plan_index
FROM plans p, range(p.n_runs) t(i)
UNION ALL
SELECT experiment, run_id, 'counterfactual' AS role, NULL::BIGINT AS plan_seed, NULL::BIGINT AS plan_index
FROM planned_counterfactuals;

-- Planned but not yet recorded: what a resumed collection still has to train.
CREATE OR REPLACE VIEW missing_runs AS
SELECT pr.*
FROM planned_runs pr
ANTI JOIN runs r ON r.experiment = pr.experiment AND r.run_id = pr.run_id;

-- A mask's kept train examples as ascending indices (INTEGER[]): get_bit(mask, i) is example i, and
-- the pad bits past n_train are 0. In plain DuckDB, `mask::BLOB` gives np.packbits' bytes; a bare
-- `mask` through Arrow (polars, `.pl()`) carries DuckDB's padding-count byte in front of them.
CREATE OR REPLACE MACRO mask_indices(mask) AS
    [i::INTEGER FOR i IN range(bit_length(mask)) IF get_bit(mask, i::INTEGER) = 1];
