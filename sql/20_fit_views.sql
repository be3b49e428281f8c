-- What a fit trains on. `dmdb fit` reads its fit and validation runs from fit_pool (narrowed by
-- --where), its holdout runs from holdout_pool (never narrowed, so every fit of an experiment is
-- scored on the same held-out runs) and its targets from target_pool (narrowed by --targets).
-- Redefine a view to change the default for every fit; the fit records what it used in fit_runs.
-- These three are created once (IF NOT EXISTS): a writable open that re-applies sql/ (a new dmdb
-- release) keeps a redefinition, where OR REPLACE put every fit back on all the runs, silently.
-- dmdb_meta ('pool_view:NAME') records each as dmdb created it: one still so takes a new release's
-- definition. CREATE OR REPLACE the definition below to return to the default.

CREATE VIEW IF NOT EXISTS fit_pool AS
SELECT experiment, run_id FROM runs WHERE role = 'fit';

CREATE VIEW IF NOT EXISTS holdout_pool AS
SELECT experiment, run_id FROM runs WHERE role = 'holdout';

CREATE VIEW IF NOT EXISTS target_pool AS
SELECT e.name AS experiment, t.i::INTEGER AS target
FROM experiments e, range(e.n_targets) t(i);

-- One line per fit: what `dmdb fits` shows.
CREATE OR REPLACE VIEW fit_overview AS
SELECT f.fit_id, f.experiment, f.estimator, f.lds,
       f.n_fit_runs, f.n_val_runs, f.n_holdout_runs,
       count(t.target)  AS n_targets,
       avg(t.val_r2)    AS mean_val_r2,
       avg(t.nnz)       AS mean_nnz,
       f.device, f.seconds, f.runs_where, f.targets_where, f.created_at
FROM fits f LEFT JOIN fit_targets t USING (fit_id)
GROUP BY ALL
ORDER BY f.fit_id;
