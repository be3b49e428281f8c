-- Analyses of fitted datamodels: tables that store embeddings, and table macros that answer the
-- five applications in plain SQL. Re-created by the writable open that first sees a changed sql/
-- (a new dmdb release; tables IF NOT EXISTS): a macro dropped or redefined by hand stays so until then.
--
-- Conventions shared with dmdb.analyses (the Python functions give the same numbers):
--  * fit := NULL means the latest fit (highest fit_id).
--  * Weights are raw 0/1 mask units; the baseline is the FULL train set:
--      base_margin      = bias + sum of all the target's weights
--      predicted_margin = base_margin - sum of the removed examples' weights
--      predicted_change = - sum of the removed examples' weights
--  * A prediction is wrong when its margin is < 0; `flips` means (base < 0) <> (predicted < 0).
--  * Ties between equal weights are broken by train_idx ascending.
-- Macro parameters shadow column names inside a macro body, so every column below is qualified.

-- ---------------------------------------------------------------------------------------------
-- Stored results of dmdb.analyses.embed (one fit's rows are replaced together, in one transaction)

CREATE TABLE IF NOT EXISTS embedding_runs (
    fit_id       INTEGER PRIMARY KEY,
    n_components INTEGER NOT NULL,
    n_clusters   INTEGER NOT NULL,
    seed         BIGINT  NOT NULL,
    method       VARCHAR NOT NULL,   -- how PCA/eigenvectors were computed: 'exact' or 'randomized'
    seconds      DOUBLE,
    computed_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- PCA of the L2-normalised weight vectors of all targets (centred over targets).
CREATE TABLE IF NOT EXISTS embedding_components (
    fit_id                   INTEGER NOT NULL,
    component                INTEGER NOT NULL,   -- 0 = largest variance
    singular_value           DOUBLE  NOT NULL,
    explained_variance       DOUBLE  NOT NULL,
    explained_variance_ratio DOUBLE  NOT NULL,
    PRIMARY KEY (fit_id, component)
);

-- A target's coordinate (PCA score) along each component.
CREATE TABLE IF NOT EXISTS embeddings (
    fit_id    INTEGER NOT NULL,
    target    INTEGER NOT NULL,
    component INTEGER NOT NULL,
    value     DOUBLE  NOT NULL,
    PRIMARY KEY (fit_id, target, component)
);

-- A component's direction in train-example space (unit vector; sign: largest |loading| positive).
CREATE TABLE IF NOT EXISTS embedding_loadings (
    fit_id    INTEGER NOT NULL,
    component INTEGER NOT NULL,
    train_idx INTEGER NOT NULL,
    loading   DOUBLE  NOT NULL
);

-- Spectral clusters of targets (affinity (1 + cosine) / 2 of their weight vectors).
CREATE TABLE IF NOT EXISTS clusters (
    fit_id     INTEGER NOT NULL,
    target     INTEGER NOT NULL,
    cluster    INTEGER NOT NULL,
    centrality DOUBLE,            -- cosine between the target and its cluster's mean direction
    PRIMARY KEY (fit_id, target)
);

-- Mean L2-normalised weight of each train example over a cluster's targets (nonzeros only).
CREATE TABLE IF NOT EXISTS cluster_train (
    fit_id      INTEGER NOT NULL,
    cluster     INTEGER NOT NULL,
    train_idx   INTEGER NOT NULL,
    mean_weight DOUBLE  NOT NULL
);

CREATE OR REPLACE VIEW cluster_sizes AS
SELECT c.fit_id, c.cluster, count(*) AS n_targets, avg(c.centrality) AS mean_centrality
FROM clusters c GROUP BY ALL;

-- ---------------------------------------------------------------------------------------------
-- Scalar helpers

-- latest_fit(): the latest fit of all; latest_fit('study'): that experiment's, for fit := in a database
-- of several experiments (where fit := NULL takes the latest fit of any).
CREATE OR REPLACE MACRO latest_fit() AS (SELECT max(f.fit_id) FROM fits f),
    (experiment) AS
    CASE WHEN NOT EXISTS (SELECT 1 FROM experiments e WHERE e.name = experiment)
         THEN error('latest_fit: no experiment ' || coalesce('''' || experiment || '''', 'NULL') || ' (known: '
                    || coalesce((SELECT string_agg(e.name, ', ' ORDER BY e.name) FROM experiments e), 'none') || ')')
         ELSE coalesce((SELECT max(f.fit_id) FROM fits f WHERE f.experiment = experiment),
                       error('latest_fit: experiment ''' || experiment || ''' has no fits yet; run `dmdb fit '
                             || experiment || '` first')) END;

CREATE OR REPLACE MACRO dmdb_fit_or_latest(fit) AS
    CASE WHEN fit IS NULL THEN coalesce(latest_fit(), error('no fits in this database yet; run `dmdb fit` first'))
         WHEN EXISTS (SELECT 1 FROM fits f WHERE f.fit_id = fit) THEN fit
         ELSE error('no fit ' || fit || ' in this database (`dmdb fits` lists them; fit := NULL is the latest); '
                    || 'give arguments by name, e.g. counterfactual(target := 17, k := 10)') END;

-- The target, checked against the fit's targets (`who` names the macro in the message).
CREATE OR REPLACE MACRO dmdb_target_of(fid, target, who) AS
    CASE WHEN target IS NULL THEN error(who || ': give a target, e.g. ' || who || '(target := 17)')
         WHEN EXISTS (SELECT 1 FROM fit_targets t WHERE t.fit_id = fid AND t.target = target) THEN target
         ELSE error(who || ': fit ' || fid || ' has no target ' || target) END;

-- A count such as k, checked to be >= lo (NULL too: it would silently match no rows, i.e. k = 0).
-- lo is 1 where the Python API asks for a positive k (a list of the k strongest), 0 where k = 0 means something.
-- A fraction is refused too (k := 2.7 removed 2 examples; Python refuses a k that is not an integer),
-- and so are NaN and inf (DuckDB orders NaN above every number and takes NaN = floor(NaN)).
CREATE OR REPLACE MACRO dmdb_count(k, lo, what) AS
    CASE WHEN k >= lo AND k = floor(k) AND isfinite(k) THEN k
         WHEN k >= lo THEN error(what || ' must be a whole number, got ' || k)
         ELSE error(what || ' must be >= ' || lo || ', got ' || coalesce(k::VARCHAR, 'NULL')) END;

-- ---------------------------------------------------------------------------------------------
-- Similar examples: a target's k largest positive and k most negative weights.

CREATE OR REPLACE MACRO top_weights(fit := NULL, target := NULL, k := 10) AS TABLE
WITH p AS (
    SELECT fid, dmdb_target_of(fid, target, 'top_weights') AS tgt, dmdb_count(k, 1, 'top_weights: k') AS kk
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid)
),
w AS (
    SELECT x.fit_id, x.target AS tgt, x.train_idx, x.weight::DOUBLE AS weight,
           row_number() OVER (ORDER BY x.weight DESC, x.train_idx) AS rp,
           row_number() OVER (ORDER BY x.weight ASC, x.train_idx) AS rn
    FROM weights x, p
    WHERE x.fit_id = p.fid AND x.target = p.tgt AND x.weight <> 0
)
SELECT w.fit_id, w.tgt AS target,
       CASE WHEN w.weight > 0 THEN 'positive' ELSE 'negative' END AS direction,
       CASE WHEN w.weight > 0 THEN w.rp ELSE w.rn END AS "rank",
       w.train_idx, w.weight, e.label, coalesce(e.image_shape IS NOT NULL, false) AS has_image
FROM w
CROSS JOIN p
JOIN fits f ON f.fit_id = w.fit_id
LEFT JOIN train_examples e ON e.experiment = f.experiment AND e.idx = w.train_idx
WHERE (w.weight > 0 AND w.rp <= p.kk) OR (w.weight < 0 AND w.rn <= p.kk)
ORDER BY w.weight < 0, "rank";

-- ---------------------------------------------------------------------------------------------
-- Counterfactual of one target: remove its k largest positive (mode 'top') or k most negative
-- (mode 'bottom') weights. Fewer are removed when the target has fewer such weights.

CREATE OR REPLACE MACRO counterfactual(fit := NULL, target := NULL, k := 10, mode := 'top') AS TABLE
WITH p AS (
    SELECT fid, dmdb_target_of(fid, target, 'counterfactual') AS tgt, dmdb_count(k, 0, 'counterfactual: k') AS kk,
           CASE WHEN mode IN ('top', 'bottom') THEN mode
                ELSE error('counterfactual: mode must be ''top'' or ''bottom'' (random removal: use the Python API)') END AS md
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid)
),
ft AS (
    SELECT x.fit_id, x.target AS tgt, x.bias FROM fit_targets x, p WHERE x.fit_id = p.fid AND x.target = p.tgt
),
tw AS (
    SELECT x.train_idx, x.weight::DOUBLE AS weight FROM weights x, p WHERE x.fit_id = p.fid AND x.target = p.tgt
),
ranked AS (
    SELECT tw.train_idx, tw.weight,
           row_number() OVER (ORDER BY CASE WHEN p.md = 'top' THEN -tw.weight ELSE tw.weight END, tw.train_idx) AS r
    FROM tw, p
    WHERE (p.md = 'top' AND tw.weight > 0) OR (p.md = 'bottom' AND tw.weight < 0)
),
agg AS (
    SELECT coalesce(sum(ranked.weight), 0) AS removed_sum, count(*) AS n_removed,
           coalesce(list(ranked.train_idx ORDER BY ranked.r), []) AS removed
    FROM ranked, p WHERE ranked.r <= p.kk
),
tot AS (SELECT coalesce(sum(tw.weight), 0) AS s FROM tw)
SELECT ft.fit_id, ft.tgt AS target, p.md AS mode, agg.n_removed,
       ft.bias + tot.s AS base_margin,
       ft.bias + tot.s - agg.removed_sum AS predicted_margin,
       0.0 - agg.removed_sum AS predicted_change,
       ((ft.bias + tot.s) < 0) <> ((ft.bias + tot.s - agg.removed_sum) < 0) AS flips,
       agg.removed
FROM ft, p, agg, tot;

-- Counterfactual of one removal set over every target of the fit.
CREATE OR REPLACE MACRO counterfactual_all(fit := NULL, remove := NULL) AS TABLE
WITH p AS (
    SELECT q.fid,
           CASE WHEN remove IS NULL THEN error('counterfactual_all: give remove := [train indices]')
                WHEN list_count(remove) < len(remove)  -- a NULL would silently remove nothing
                THEN error('counterfactual_all: remove holds a NULL; give train indices only')
                WHEN list_min(remove) < 0 OR list_max(remove) >= e.n_train
                THEN error('counterfactual_all: remove holds train indices outside 0..' || (e.n_train - 1))
                WHEN EXISTS (SELECT 1 FROM unnest(remove) u(x) WHERE u.x <> floor(u.x))  -- [1.5] removed nothing
                THEN error('counterfactual_all: remove holds a fraction; give whole train indices')
                ELSE remove END AS rm
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid) q
    -- LEFT joins: with an empty fits table an inner join never evaluated fid, so a database
    -- without fits returned no rows instead of the 'no fits' error
    LEFT JOIN fits f ON f.fit_id = q.fid LEFT JOIN experiments e ON e.name = f.experiment
),
tot AS (
    SELECT x.target AS tgt, sum(x.weight::DOUBLE) AS s
    FROM weights x WHERE x.fit_id = (SELECT p.fid FROM p) GROUP BY x.target
),
rem AS (
    SELECT x.target AS tgt, sum(x.weight::DOUBLE) AS removed_sum
    FROM weights x
    WHERE x.fit_id = (SELECT p.fid FROM p) AND x.train_idx IN (SELECT unnest(p.rm) FROM p)
    GROUP BY x.target
)
SELECT ft.fit_id, ft.target AS target,
       ft.bias + coalesce(tot.s, 0) AS base_margin,
       ft.bias + coalesce(tot.s, 0) - coalesce(rem.removed_sum, 0) AS predicted_margin,
       0.0 - coalesce(rem.removed_sum, 0) AS predicted_change,
       ((ft.bias + coalesce(tot.s, 0)) < 0) <> ((ft.bias + coalesce(tot.s, 0) - coalesce(rem.removed_sum, 0)) < 0) AS flips
FROM fit_targets ft
LEFT JOIN tot ON tot.tgt = ft.target
LEFT JOIN rem ON rem.tgt = ft.target
WHERE ft.fit_id = (SELECT p.fid FROM p)
ORDER BY ft.target;

-- ---------------------------------------------------------------------------------------------
-- Brittleness (data support): per target, the smallest k >= 0 such that removing its k largest
-- positive weights makes the predicted margin < 0. 0 when already < 0; NULL when removing all
-- positive weights is not enough. label is the target's (NULL where it has none).

CREATE OR REPLACE MACRO brittleness(fit := NULL) AS TABLE
WITH p AS (SELECT dmdb_fit_or_latest(fit) AS fid),
s AS (
    SELECT x.target AS tgt, sum(x.weight::DOUBLE) AS sw, count(*) FILTER (WHERE x.weight > 0) AS npos
    FROM weights x, p WHERE x.fit_id = p.fid GROUP BY x.target
),
b AS (
    SELECT ft.target AS tgt, ft.bias + coalesce(s.sw, 0) AS base_margin, coalesce(s.npos, 0) AS n_positive
    FROM fit_targets ft JOIN p ON ft.fit_id = p.fid LEFT JOIN s ON s.tgt = ft.target
),
ranked AS (
    SELECT x.target AS tgt,
           row_number() OVER w AS kk,
           sum(x.weight::DOUBLE) OVER w AS removed
    FROM weights x, p
    WHERE x.fit_id = p.fid AND x.weight > 0
    WINDOW w AS (PARTITION BY x.target ORDER BY x.weight DESC, x.train_idx
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
first_flip AS (
    SELECT ranked.tgt, min(ranked.kk) AS kk, arg_min(ranked.removed, ranked.kk) AS removed
    FROM ranked JOIN b ON b.tgt = ranked.tgt
    WHERE b.base_margin >= 0 AND b.base_margin - ranked.removed < 0
    GROUP BY ranked.tgt
)
SELECT p.fid AS fit_id, b.tgt AS target, t.label, b.base_margin, b.n_positive,
       CASE WHEN b.base_margin < 0 THEN 0 ELSE first_flip.kk END AS support,
       CASE WHEN b.base_margin < 0 THEN b.base_margin ELSE b.base_margin - first_flip.removed END AS margin_after
FROM b CROSS JOIN p LEFT JOIN first_flip ON first_flip.tgt = b.tgt
JOIN fits f ON f.fit_id = p.fid
LEFT JOIN targets t ON t.experiment = f.experiment AND t.idx = b.tgt
ORDER BY b.tgt;

-- Distribution of support over targets predicted correct (base margin >= 0).
CREATE OR REPLACE MACRO brittleness_summary(fit := NULL, thresholds := [10, 20, 40, 80, 160, 250, 500, 1000]) AS TABLE
WITH br AS (SELECT * FROM brittleness(fit := fit)),
th AS (  -- (an empty list gave no rows, NULL a row with k_max NULL, and 2.5 was rounded to 3)
    SELECT DISTINCT CASE WHEN u.t >= 1 AND u.t = floor(u.t) THEN u.t::BIGINT
                         ELSE error('brittleness_summary: thresholds must be whole numbers >= 1, got ' || coalesce(u.t::VARCHAR, 'NULL')) END AS k_max
    FROM (SELECT unnest(CASE WHEN len(thresholds) >= 1 THEN thresholds
                             ELSE error('brittleness_summary: thresholds must be whole numbers >= 1, got '
                                        || CASE WHEN thresholds IS NULL THEN 'NULL' ELSE 'an empty list' END) END) AS t) u
),
tot AS (SELECT count(*) AS n_targets, count(*) FILTER (WHERE br.support IS DISTINCT FROM 0) AS n_correct FROM br),
cnt AS (
    SELECT th.k_max, count(br.target) AS n_flipped
    FROM th LEFT JOIN br ON br.support >= 1 AND br.support <= th.k_max
    GROUP BY th.k_max
)
SELECT cnt.k_max, tot.n_targets, tot.n_correct, cnt.n_flipped,
       cnt.n_flipped / nullif(tot.n_correct, 0) AS frac_flipped
FROM cnt, tot
ORDER BY cnt.k_max;

-- ---------------------------------------------------------------------------------------------
-- Verification by retraining: dmdb.analyses.verification's rows and summary

-- The end of a 'no runs' error: how to record some.
CREATE OR REPLACE MACRO dmdb_how_to_record() AS
    'plan them with dmdb.analyses.plan_counterfactuals, train each planned mask with your code and record them with '
    || 'role ''counterfactual'' and the plan''s seeds and infos (README: Verifying counterfactuals with your own '
    || 'training code), or run `dmdb demo`';

-- Which fits planned the experiment's recorded counterfactual runs (planners, ascending) and how to check fit
-- fid on them, as a clause of the 'no runs' error ('' when none did): a later fit becomes the default one,
-- and its 'no runs recorded' hid the runs recorded for another.
CREATE OR REPLACE MACRO dmdb_planners_hint(fid, planners) AS
    list_transform([list_filter(planners, lambda x: x <> fid)], lambda others: CASE
        WHEN len(planners) = 0 THEN ''
        WHEN len(others) = 0  -- runs_of named a fit without runs, and only fid has some
        THEN ' (the recorded ones were planned by fit ' || fid || ': verification(fit := ' || fid || ') checks them)'
        ELSE ' (the recorded ones were planned by fit' || CASE WHEN len(planners) > 1 THEN 's ' ELSE ' ' END
             || array_to_string(planners, ', ') || ': verification(fit := ' || fid || ', runs_of := ' || others[-1]
             || ') checks fit ' || fid || '''s predictions on them, verification(fit := ' || others[-1] || ') fit '
             || others[-1] || '''s own)' END)[1];

-- Fit `fit`'s predictions against the counterfactual runs that fit `runs_of` planned (runs_of := NULL:
-- the fit's own), recorded with role 'counterfactual' and the info verification.run_info makes: {"fit_id", "target", "k", "mode", "purpose", "removed"}.
-- One row per recorded removal (target, k, mode, purpose and removed list alike), in the order of its
-- first run; purpose 'baseline' (the full train set) is what every removal is compared with:
--   n_removed, predicted_*: the rule above for the removal's distinct train indices (a run recorded
--       without a removed list: the planning fit's k largest positive (mode 'top') or most negative
--       ('bottom') weights of the target)
--   seeds:         the removal's runs
--   actual_margin: the target's mean margin over them; actual_base: over the baseline runs
--   actual_change: actual_margin - actual_base
CREATE OR REPLACE MACRO verification(fit := NULL, runs_of := NULL) AS TABLE
WITH args AS (
    SELECT q.fid,
           CASE WHEN runs_of IS NULL THEN q.fid
                WHEN EXISTS (SELECT 1 FROM fits x WHERE x.fit_id = runs_of) THEN runs_of
                ELSE error('verification: no fit ' || runs_of || ' in this database to take the runs of (`dmdb fits` '
                           || 'lists them; runs_of := NULL: the fit''s own)') END AS pid
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid) q
),
planners AS (  -- the fit's experiment's counterfactual runs, by the fit that planned them
    SELECT (x.info->>'fit_id')::INTEGER AS planner, count(*) AS n,
           count(*) FILTER (WHERE x.info->>'purpose' = 'baseline') AS n_baseline
    FROM runs x JOIN fits ff ON ff.experiment = x.experiment JOIN args ON ff.fit_id = args.fid
    WHERE x.role = 'counterfactual' AND (x.info->>'fit_id')::INTEGER IS NOT NULL
    GROUP BY 1
),
-- (LEFT joins: with an empty fits table an inner join never evaluated fid, and gave no rows, not the error)
p AS (
    SELECT args.fid, ff.experiment AS ex, e.n_train,
           CASE WHEN fp.experiment <> ff.experiment
                THEN error('verification: fit ' || args.fid || ' (experiment ''' || ff.experiment || ''') cannot predict '
                           || 'the runs of fit ' || args.pid || ' (experiment ''' || fp.experiment || '''): their train '
                           || 'sets differ; name a fit of experiment ''' || ff.experiment || ''' as runs_of')
                WHEN own.n IS NULL
                THEN error('verification: fit ' || args.pid || ' has no counterfactual runs recorded'
                           || dmdb_planners_hint(args.fid, every.planners)
                           || ': ' || dmdb_how_to_record())
                WHEN own.n_baseline = 0
                THEN error('verification: fit ' || args.pid || ' has counterfactual runs but no baseline (full train set) '
                           || 'runs to compare them with: ' || dmdb_how_to_record())
                ELSE args.pid END AS pid
    FROM args LEFT JOIN fits ff ON ff.fit_id = args.fid LEFT JOIN fits fp ON fp.fit_id = args.pid
    LEFT JOIN experiments e ON e.name = ff.experiment LEFT JOIN planners own ON own.planner = args.pid
    CROSS JOIN (SELECT coalesce(list(x.planner ORDER BY x.planner), []) AS planners FROM planners x) every
),
r AS (
    SELECT x.run_id, x.info->>'purpose' AS purpose, (x.info->>'target')::INTEGER AS tgt, (x.info->>'k')::INTEGER AS k,
           coalesce(x.info->>'mode', 'top') AS md, (x.info->'removed')::INTEGER[] AS removed, x.margins
    FROM runs x, p
    WHERE x.experiment = p.ex AND x.role = 'counterfactual' AND (x.info->>'fit_id')::INTEGER = p.pid
),
g AS MATERIALIZED (  -- one row per removal, numbered in the order of its first run
    SELECT row_number() OVER (ORDER BY min(r.run_id)) AS gid, r.tgt, r.k, r.md, r.purpose, r.removed,
           count(*) AS seeds, avg(r.margins[r.tgt + 1]::DOUBLE) AS actual_margin
    FROM r WHERE r.purpose <> 'baseline'
    GROUP BY r.tgt, r.k, r.md, r.purpose, r.removed
),
actual_base AS (
    SELECT g.gid, avg(r.margins[g.tgt + 1]::DOUBLE) AS m FROM g, r WHERE r.purpose = 'baseline' GROUP BY g.gid
),
listed AS (  -- a removal recorded with its list: each train index once
    SELECT DISTINCT g.gid, u.i AS train_idx FROM g CROSS JOIN unnest(g.removed) AS u(i)
),
ranked AS (  -- one recorded without its list: the planning fit's weights of the mode's sign, in removal order
    SELECT g.gid, x.train_idx,
           row_number() OVER (PARTITION BY g.gid ORDER BY CASE WHEN g.md = 'top' THEN -x.weight ELSE x.weight END,
                                                          x.train_idx) AS rk
    FROM g CROSS JOIN p JOIN weights x ON x.fit_id = p.pid AND x.target = g.tgt
    WHERE g.removed IS NULL AND ((g.md = 'top' AND x.weight > 0) OR (g.md = 'bottom' AND x.weight < 0))
),
removal AS (
    SELECT listed.gid, listed.train_idx FROM listed
    UNION ALL
    SELECT ranked.gid, ranked.train_idx FROM ranked JOIN g ON g.gid = ranked.gid WHERE ranked.rk <= g.k
),
removed_sum AS (  -- over the verified fit's weights
    SELECT removal.gid, count(*) AS n, coalesce(sum(x.weight::DOUBLE), 0) AS s
    FROM removal JOIN g ON g.gid = removal.gid CROSS JOIN p
    LEFT JOIN weights x ON x.fit_id = p.fid AND x.target = g.tgt AND x.train_idx = removal.train_idx
    GROUP BY removal.gid
),
total AS (
    SELECT x.target AS tgt, sum(x.weight::DOUBLE) AS s
    FROM weights x, p WHERE x.fit_id = p.fid AND x.target IN (SELECT g.tgt FROM g) GROUP BY x.target
),
pred AS (
    SELECT g.gid, ft.target AS has_tgt, ft.bias + coalesce(total.s, 0) AS base, 0.0 - coalesce(removed_sum.s, 0) AS change,
           coalesce(removed_sum.n, 0) AS n_removed
    FROM g CROSS JOIN p
    LEFT JOIN fit_targets ft ON ft.fit_id = p.fid AND ft.target = g.tgt
    LEFT JOIN total ON total.tgt = g.tgt
    LEFT JOIN removed_sum ON removed_sum.gid = g.gid
),
lacking AS (  -- the targets of the runs that the fit has no datamodel for
    SELECT string_agg(coalesce(u.t::VARCHAR, 'NULL'), ', ' ORDER BY u.t NULLS LAST) AS targets
    FROM (SELECT DISTINCT g.tgt AS t FROM g JOIN pred ON pred.gid = g.gid WHERE pred.has_tgt IS NULL) u
)
SELECT p.fid AS fit_id, p.pid AS runs_of, g.tgt AS target, g.k, g.md AS mode, g.purpose, pred.n_removed, g.seeds,
       pred.base AS predicted_base, pred.base + pred.change AS predicted_margin, pred.change AS predicted_change,
       actual_base.m AS actual_base, g.actual_margin, g.actual_margin - actual_base.m AS actual_change
FROM g CROSS JOIN p CROSS JOIN lacking JOIN pred ON pred.gid = g.gid LEFT JOIN actual_base ON actual_base.gid = g.gid
-- what Python refuses, checked in a filter (a check in a column ran only where that column was read)
WHERE CASE
    WHEN pred.has_tgt IS NULL
    THEN error('verification: fit ' || p.fid || ' has no datamodel for target(s) '
               || lacking.targets
               || ' of the runs of fit ' || p.pid || ': verify it on runs planned for targets it has')
    WHEN list_count(g.removed) < len(g.removed) OR list_min(g.removed) < 0 OR list_max(g.removed) >= p.n_train
    THEN error('verification: the runs of fit ' || p.pid || ' for target ' || g.tgt || ' removed '
               || CASE WHEN list_count(g.removed) < len(g.removed) THEN 'a NULL'
                       ELSE 'train index ' || list_filter(g.removed, lambda i: i < 0 OR i >= p.n_train)[1]
                            || ', outside 0..' || (p.n_train - 1) END
               || ': record the train indices each run was trained without')
    WHEN g.removed IS NULL AND (g.md NOT IN ('top', 'bottom') OR g.k IS NULL OR g.k < 0)
    THEN error('verification: the runs of fit ' || p.pid || ' for target ' || g.tgt || ' have no removed list '
               || CASE WHEN g.md = 'random' THEN 'and mode ''random'': use the Python API (dmdb.analyses.verification)'
                       WHEN g.md IN ('top', 'bottom') THEN 'and k ' || coalesce(g.k::VARCHAR, 'NULL')
                            || ' (a k >= 0 of the planning fit''s ' || g.md || ' weights)'
                       ELSE 'and mode ''' || g.md || ''' (one of top, bottom, random)' END
               || ': record the train indices each run was trained without')
    ELSE true END
ORDER BY g.gid;

-- Verification's figures as one row (dmdb.analyses.Verification.summary): Spearman (Pearson of average
-- ranks) and Pearson of predicted vs actual change over the purpose 'counterfactual' rows (NULL under 3 rows
-- or where either side is constant); of the 'brittleness' rows (the planning fit's estimated support
-- removed): brittle_tested, brittle_flipped (actual_base >= 0 and actual_margin < 0),
-- brittle_already_wrong (actual_base < 0), and brittle_agreed: of those with actual_base >= 0, the ones
-- where the fit's predicted flip (predicted_base >= 0 and predicted_margin < 0) is the actual one.
CREATE OR REPLACE MACRO verification_summary(fit := NULL, runs_of := NULL) AS TABLE
WITH v AS MATERIALIZED (SELECT * FROM verification(fit := fit, runs_of := runs_of)),
cf AS (
    SELECT v.predicted_change AS x, v.actual_change AS y,
           rank() OVER (ORDER BY v.predicted_change) + (count(*) OVER (PARTITION BY v.predicted_change) - 1) / 2.0 AS rx,
           rank() OVER (ORDER BY v.actual_change) + (count(*) OVER (PARTITION BY v.actual_change) - 1) / 2.0 AS ry
    FROM v WHERE v.purpose = 'counterfactual'
),
c AS (
    SELECT count(*) AS n, count(*) >= 3 AND count(DISTINCT cf.x) > 1 AND count(DISTINCT cf.y) > 1 AS varies,
           corr(cf.rx, cf.ry) AS spearman, corr(cf.x, cf.y) AS pearson
    FROM cf
),
b AS (
    SELECT count(*) AS tested,
           count(*) FILTER (WHERE v.actual_base >= 0 AND v.actual_margin < 0) AS flipped,
           count(*) FILTER (WHERE v.actual_base < 0) AS already_wrong,
           count(*) FILTER (WHERE v.actual_base >= 0
                            AND (v.predicted_base >= 0 AND v.predicted_margin < 0) = (v.actual_margin < 0)) AS agreed
    FROM v WHERE v.purpose = 'brittleness'
),
ids AS (  -- (from the arguments too, which verification checked: it has no rows where only baseline runs are recorded)
    SELECT coalesce((SELECT min(v.fit_id) FROM v), fit::INTEGER, latest_fit()) AS fid,
           coalesce((SELECT min(v.runs_of) FROM v), runs_of::INTEGER, fit::INTEGER, latest_fit()) AS pid
)
SELECT ids.fid AS fit_id, ids.pid AS runs_of, c.n AS counterfactuals,
       CASE WHEN c.varies THEN c.spearman END AS spearman, CASE WHEN c.varies THEN c.pearson END AS pearson,
       b.tested AS brittle_tested, b.flipped AS brittle_flipped, b.already_wrong AS brittle_already_wrong,
       b.agreed AS brittle_agreed
FROM ids, c, b;

-- ---------------------------------------------------------------------------------------------
-- Nearest targets by cosine similarity of weight vectors, among targets that share at least one
-- nonzero train example with the query (all others have cosine exactly 0).

CREATE OR REPLACE MACRO nearest_targets(fit := NULL, target := NULL, k := 10) AS TABLE
WITH p AS (
    SELECT fid, dmdb_target_of(fid, target, 'nearest_targets') AS tgt, dmdb_count(k, 1, 'nearest_targets: k') AS kk
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid)
),
q AS (SELECT x.train_idx, x.weight::DOUBLE AS weight FROM weights x, p WHERE x.fit_id = p.fid AND x.target = p.tgt),
qn AS (SELECT sqrt(sum(q.weight * q.weight)) AS n FROM q),
dots AS (
    SELECT x.target AS nb, sum(x.weight::DOUBLE * q.weight) AS dot
    FROM weights x JOIN q ON q.train_idx = x.train_idx, p
    WHERE x.fit_id = p.fid AND x.target <> p.tgt
    GROUP BY x.target
),
norms AS (
    SELECT x.target AS nb, sqrt(sum(x.weight::DOUBLE * x.weight::DOUBLE)) AS n
    FROM weights x, p WHERE x.fit_id = p.fid AND x.target IN (SELECT dots.nb FROM dots)
    GROUP BY x.target
),
sc AS (
    SELECT dots.nb, dots.dot / (norms.n * qn.n) AS cosine
    FROM dots JOIN norms ON norms.nb = dots.nb, qn
    WHERE norms.n > 0 AND qn.n > 0
),
ranked AS (
    SELECT sc.nb, sc.cosine, row_number() OVER (ORDER BY sc.cosine DESC, sc.nb) AS r FROM sc
)
SELECT p.fid AS fit_id, p.tgt AS target, ranked.r AS "rank", ranked.nb AS neighbor, ranked.cosine,
       t.label AS neighbor_label
FROM ranked CROSS JOIN p
JOIN fits f ON f.fit_id = p.fid
LEFT JOIN targets t ON t.experiment = f.experiment AND t.idx = ranked.nb
WHERE ranked.r <= p.kk
ORDER BY ranked.r;

-- ---------------------------------------------------------------------------------------------
-- Images as numbers. set_examples stores an image as its raw bytes in C order with numpy's dtype.str
-- ('|u1', '<f4', '>i2', ...: byte order, kind, item size); dmdb_image_values gives its pixels as the
-- DOUBLE list numpy's astype(float64).ravel() gives (bool, integers of 1 to 8 bytes, floats of 2, 4 or
-- 8 bytes; NULL for another dtype). Each item is read as an unsigned integer from its hex digits, eight
-- bytes at a time (little-endian ones reversed byte by byte), then as a signed integer or an IEEE float
-- of its width.

CREATE OR REPLACE MACRO dmdb_image_decodable(dt) AS
    dt IN ('|b1', '|u1', '|i1', '<u2', '>u2', '<i2', '>i2', '<u4', '>u4', '<i4', '>i4', '<u8', '>u8',
           '<i8', '>i8', '<f2', '>f2', '<f4', '>f4', '<f8', '>f8');

-- w with its 8 bytes in reverse order (w is a lambda's parameter in every call: its 8 uses cost nothing)
CREATE OR REPLACE MACRO dmdb_byte_swap(w) AS
    ((w & 255::UBIGINT) << 56::UBIGINT) | ((w & 65280::UBIGINT) << 40::UBIGINT)
    | ((w & 16711680::UBIGINT) << 24::UBIGINT) | ((w & 4278190080::UBIGINT) << 8::UBIGINT)
    | ((w >> 8::UBIGINT) & 4278190080::UBIGINT) | ((w >> 24::UBIGINT) & 16711680::UBIGINT)
    | ((w >> 40::UBIGINT) & 65280::UBIGINT) | (w >> 56::UBIGINT);

-- An image's hex digits h as 8-byte words, each read as the unsigned integer its bytes make, in order
-- (a short last word shifted up into place, as if padded with zero bytes) or, little, in reverse order.
-- (The bytes are swapped as integers: reversing the digits with reverse() cost about 5x as much.)
CREATE OR REPLACE MACRO dmdb_image_words(h, little) AS
    list_transform(list_transform(regexp_extract_all(h, '.{1,16}'),
                                  lambda x: ('0x' || x)::UBIGINT << (64 - 4 * length(x))::UBIGINT),
                   lambda w: CASE WHEN little THEN dmdb_byte_swap(w) ELSE w END);

-- The items of size bytes in an image's hex digits h, from its words: a cast from hex digits costs far
-- more than the shifts that split its word into items. A big-endian word has its first item in the high
-- bits, a little-endian (byte-swapped) one in the low bits; shifts says where each item of a word
-- starts, mask keeps one item. little, shifts and mask are constants in every call, so nothing in the
-- lambdas depends on the row.
CREATE OR REPLACE MACRO dmdb_image_items(h, size, little, shifts, mask) AS
    list_slice(flatten(list_transform(dmdb_image_words(h, little), lambda w: list_transform(shifts, lambda s: (w >> s::UBIGINT) & mask))),
               1, length(h) // (2 * size));

-- (bits and numbers name their list argument once, as the parameter of a lambda over a one-element
-- list: a macro's argument is copied into every branch that uses it, and the planner paid for each
-- copy, ~0.2 s a query for the 63 copies of the image that the branches below made)
CREATE OR REPLACE MACRO dmdb_image_bits(h, little, size) AS
    list_transform([h], lambda hx: CASE
        WHEN size = 1 THEN dmdb_image_items(hx, 1, false, [56, 48, 40, 32, 24, 16, 8, 0], 255::UBIGINT)
        WHEN size = 2 AND little THEN dmdb_image_items(hx, 2, true, [0, 16, 32, 48], 65535::UBIGINT)
        WHEN size = 2 THEN dmdb_image_items(hx, 2, false, [48, 32, 16, 0], 65535::UBIGINT)
        WHEN size = 4 AND little THEN dmdb_image_items(hx, 4, true, [0, 32], 4294967295::UBIGINT)
        WHEN size = 4 THEN dmdb_image_items(hx, 4, false, [32, 0], 4294967295::UBIGINT)
        -- (an 8-byte item is its word: nothing to split)
        WHEN little THEN dmdb_image_words(hx, true)
        ELSE dmdb_image_words(hx, false) END)[1];

-- an IEEE float of 1 sign bit, ebits exponent bits and mbits fraction bits (every step exact in DOUBLE)
CREATE OR REPLACE MACRO dmdb_float_magnitude(e, m, ebits, mbits) AS
    CASE WHEN e = 0 THEN m::DOUBLE * pow(2.0, 2 - (1 << (ebits - 1)) - mbits)
         WHEN e = (1 << ebits) - 1 THEN CASE WHEN m = 0 THEN 'inf'::DOUBLE ELSE 'nan'::DOUBLE END
         ELSE ((1::UBIGINT << mbits::UBIGINT) + m)::DOUBLE * pow(2.0, e + 1 - (1 << (ebits - 1)) - mbits) END;

CREATE OR REPLACE MACRO dmdb_float_from_bits(u, ebits, mbits) AS
    (1 - 2 * (u >> (ebits + mbits)::UBIGINT)::INTEGER)
    * dmdb_float_magnitude(((u >> mbits::UBIGINT) & ((1::UBIGINT << ebits::UBIGINT) - 1))::INTEGER,
                           u & ((1::UBIGINT << mbits::UBIGINT) - 1), ebits, mbits);

-- the two's complement integer of nbits bits u holds
CREATE OR REPLACE MACRO dmdb_signed(u, nbits) AS
    (u::HUGEINT - CASE WHEN u >> (nbits - 1)::UBIGINT = 1 THEN 1::HUGEINT << nbits::HUGEINT ELSE 0 END)::DOUBLE;

CREATE OR REPLACE MACRO dmdb_image_numbers(bits, kind, size) AS
    list_transform([bits], lambda b: CASE kind
        WHEN 'b' THEN list_transform(b, lambda u: (u <> 0)::DOUBLE)
        WHEN 'u' THEN list_transform(b, lambda u: u::DOUBLE)
        -- (the widths as constants in each lambda: as expressions of size they were evaluated per pixel)
        WHEN 'i' THEN CASE size WHEN 1 THEN list_transform(b, lambda u: dmdb_signed(u, 8))
                                WHEN 2 THEN list_transform(b, lambda u: dmdb_signed(u, 16))
                                WHEN 4 THEN list_transform(b, lambda u: dmdb_signed(u, 32))
                                ELSE list_transform(b, lambda u: dmdb_signed(u, 64)) END
        WHEN 'f' THEN CASE size WHEN 2 THEN list_transform(b, lambda u: dmdb_float_from_bits(u, 5, 10))
                                WHEN 4 THEN list_transform(b, lambda u: dmdb_float_from_bits(u, 8, 23))
                                ELSE list_transform(b, lambda u: dmdb_float_from_bits(u, 11, 52)) END END)[1];

CREATE OR REPLACE MACRO dmdb_image_values(img, dt) AS
    CASE WHEN dmdb_image_decodable(dt)
         THEN dmdb_image_numbers(dmdb_image_bits(hex(img), substr(dt, 1, 1) = '<', substr(dt, 3)::INTEGER),
                                 substr(dt, 2, 1), substr(dt, 3)::INTEGER) END;

-- Train-test leakage candidates. For each target with at least min_nnz nonzero weights:
--   robust_z      = (weight - median) / (1.4826 * MAD), median and MAD over its nonzero weights
--   ratio_to_next = weight / the target's next-largest positive weight (NULL if there is none)
-- A (target, train example) pair is a candidate when weight > 0 and robust_z >= min_z.
-- Ranked by robust_z, highest first. dmdb_leakage_ranked gives these columns; leakage_candidates
-- adds a second opinion where the target's and the train example's images have one shape, as
-- dmdb.analyses.pixel_distance gives it:
--   pixel_dist = ||a - b|| / (||a|| + ||b||) in [0, 1] (0 = identical pixels; 0 for two all-zero images)
--   pixel_corr = Pearson correlation of the pixels (NULL where either image is constant)
-- Decoding a 32x32x3 image in SQL takes about 0.5 ms (uint8) to 2 ms (float32), a candidate's two
-- list products far less: pixels := false leaves both columns NULL and decodes nothing.

CREATE OR REPLACE MACRO dmdb_leakage_ranked(fit := NULL, min_z := 6.0, min_nnz := 3) AS TABLE
WITH p AS (SELECT dmdb_fit_or_latest(fit) AS fid,
                  -- (NaN compared false with every z: no candidates, silently)
                  CASE WHEN NOT isnan(min_z::DOUBLE) THEN min_z::DOUBLE
                       ELSE error('leakage_candidates: min_z must be a number, got ' || coalesce(min_z::VARCHAR, 'NULL')) END AS mz,
                  -- a median and MAD of fewer than 3 weights mean nothing (Python refuses them too)
                  dmdb_count(min_nnz, 3, 'leakage_candidates: min_nnz') AS mn),
st AS (
    SELECT x.target AS tgt, median(x.weight::DOUBLE) AS med, mad(x.weight::DOUBLE) AS mad_w, count(*) AS nnz
    FROM weights x, p WHERE x.fit_id = p.fid AND x.weight <> 0 GROUP BY x.target
),
pos AS (
    SELECT x.target AS tgt, x.train_idx, x.weight::DOUBLE AS weight,
           row_number() OVER w AS rank_in_target,
           lead(x.weight::DOUBLE) OVER w AS next_weight
    FROM weights x, p
    WHERE x.fit_id = p.fid AND x.weight > 0
    WINDOW w AS (PARTITION BY x.target ORDER BY x.weight DESC, x.train_idx)
),
c AS (
    SELECT pos.tgt, pos.train_idx, pos.weight,
           (pos.weight - st.med) / (1.4826 * st.mad_w) AS robust_z,
           pos.weight / pos.next_weight AS ratio_to_next,
           pos.rank_in_target, st.nnz AS target_nnz
    FROM pos JOIN st ON st.tgt = pos.tgt, p
    WHERE st.nnz >= p.mn AND st.mad_w > 0 AND (pos.weight - st.med) / (1.4826 * st.mad_w) >= p.mz
)
SELECT row_number() OVER (ORDER BY c.robust_z DESC, c.tgt, c.train_idx) AS "rank",
       p.fid AS fit_id, c.tgt AS target, c.train_idx, c.weight, c.robust_z, c.ratio_to_next,
       c.rank_in_target, c.target_nnz,
       t.label AS target_label, e.label AS train_label,
       t.label = e.label AS same_label,
       -- image_shape, not image: set_examples writes the two (and image_dtype) together, and a test of
       -- image read every image's bytes (this macro took 89 ms with float32 32x32x3 images, 33 ms now)
       coalesce(t.image_shape IS NOT NULL AND e.image_shape IS NOT NULL, false) AS both_images
FROM c CROSS JOIN p
JOIN fits f ON f.fit_id = p.fid
LEFT JOIN targets t ON t.experiment = f.experiment AND t.idx = c.tgt
LEFT JOIN train_examples e ON e.experiment = f.experiment AND e.idx = c.train_idx
ORDER BY "rank";

CREATE OR REPLACE MACRO leakage_candidates(fit := NULL, min_z := 6.0, min_nnz := 3, pixels := true) AS TABLE
WITH r AS MATERIALIZED (SELECT * FROM dmdb_leakage_ranked(fit := fit, min_z := min_z, min_nnz := min_nnz)),
p AS (SELECT coalesce(pixels::BOOLEAN, error('leakage_candidates: pixels must be true or false, got NULL')) AS px,
             (SELECT f.experiment FROM fits f WHERE f.fit_id = (SELECT min(r.fit_id) FROM r)) AS ex),
-- each image of a candidate, chosen in a materialized CTE so that pixels := false decodes none, and
-- reads none: `pixels IS NOT false` folds to an empty plan, where p.px alone (a column) still scanned
-- every image's bytes (pixels := false 125-162 ms, now 86-103 ms, with 32x32x3 float32s); p.px
-- raises for NULL
chosen AS MATERIALIZED (
    SELECT 'target' AS side, t.idx, t.image_shape AS shape, t.image, t.image_dtype AS dt
    FROM targets t, p
    WHERE pixels::BOOLEAN IS NOT false AND p.px AND t.experiment = p.ex AND t.image IS NOT NULL
      AND t.idx IN (SELECT r.target FROM r)
    UNION ALL
    SELECT 'train', e.idx, e.image_shape, e.image, e.image_dtype
    FROM train_examples e, p
    WHERE pixels::BOOLEAN IS NOT false AND p.px AND e.experiment = p.ex AND e.image IS NOT NULL
      AND e.idx IN (SELECT r.train_idx FROM r)
),
-- (dmdb_image_values on the dtype's parts as columns: as expressions they were evaluated per pixel)
parts AS (SELECT chosen.*, substr(chosen.dt, 1, 1) = '<' AS little, substr(chosen.dt, 2, 1) AS kind,
                 substr(chosen.dt, 3)::INTEGER AS size
          FROM chosen WHERE dmdb_image_decodable(chosen.dt)),
-- (materialized: a filter on v, or each consumer of it, decoded every image again)
raw AS MATERIALIZED (SELECT parts.side, parts.idx, parts.shape,
               dmdb_image_numbers(dmdb_image_bits(hex(parts.image), parts.little, parts.size), parts.kind, parts.size) AS v
        FROM parts),
stats AS (SELECT raw.side, raw.idx, raw.shape, raw.v, sqrt(list_inner_product(raw.v, raw.v)) AS norm,
                 list_min(raw.v) < list_max(raw.v) AS varies, list_avg(raw.v) AS mean
          FROM raw),
cen AS (SELECT stats.*, list_transform(stats.v, lambda x: x - stats.mean) AS vc FROM stats),
-- per image: pixels, centred pixels and their norms, so that a pair costs two list products
img AS MATERIALIZED (SELECT cen.*, sqrt(list_inner_product(cen.vc, cen.vc)) AS cnorm FROM cen),
-- each candidate with its target's image first, then its train image: left to itself the optimizer
-- joined the two sides' images on shape first (every target x every train image, lists and all)
ta AS MATERIALIZED (SELECT r.target, r.train_idx, a.shape, a.v, a.vc, a.norm, a.cnorm, a.varies
                    FROM r JOIN img a ON a.side = 'target' AND a.idx = r.target),
px AS MATERIALIZED (
    SELECT a.target, a.train_idx,
           CASE WHEN a.norm + b.norm > 0 THEN list_distance(a.v, b.v) / (a.norm + b.norm) ELSE 0.0 END AS pixel_dist,
           CASE WHEN a.varies AND b.varies THEN list_inner_product(a.vc, b.vc) / (a.cnorm * b.cnorm) END AS pixel_corr
    FROM ta a JOIN img b ON b.side = 'train' AND b.idx = a.train_idx AND b.shape = a.shape
)
SELECT r.*, px.pixel_dist, px.pixel_corr
FROM r LEFT JOIN px ON px.target = r.target AND px.train_idx = r.train_idx
ORDER BY r."rank";

-- ---------------------------------------------------------------------------------------------
-- Stored embeddings: the targets and train examples at either end of a PCA component.
-- A fit without stored embeddings, or a component or cluster it does not have, is an error (as in
-- Python's embedding_summary), not an empty result.

CREATE OR REPLACE MACRO dmdb_embedded(fid, who) AS
    CASE WHEN EXISTS (SELECT 1 FROM embedding_runs r WHERE r.fit_id = fid) THEN true
         ELSE error(who || ': fit ' || fid || ' has no stored embeddings yet; run `dmdb embed --fit ' || fid || '` first') END;

CREATE OR REPLACE MACRO component_ends(fit := NULL, component := 0, k := 10) AS TABLE
WITH p AS (
    SELECT fid,
           CASE WHEN NOT dmdb_embedded(fid, 'component_ends') THEN NULL
                WHEN EXISTS (SELECT 1 FROM embedding_components c WHERE c.fit_id = fid AND c.component = component)
                THEN component
                ELSE error('component_ends: fit ' || fid || ' has no component ' || coalesce(component::VARCHAR, 'NULL')
                           || ' (stored: 0..' || (SELECT max(c.component) FROM embedding_components c WHERE c.fit_id = fid) || ')') END AS comp,
           dmdb_count(k, 1, 'component_ends: k') AS kk
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid)
),
tg AS (
    SELECT 'target' AS kind, x.target AS idx, x.value,
           row_number() OVER (ORDER BY x.value DESC, x.target) AS r_hi,
           row_number() OVER (ORDER BY x.value ASC, x.target) AS r_lo
    FROM embeddings x, p WHERE x.fit_id = p.fid AND x.component = p.comp
),
tr AS (
    SELECT 'train' AS kind, x.train_idx AS idx, x.loading AS value,
           row_number() OVER (ORDER BY x.loading DESC, x.train_idx) AS r_hi,
           row_number() OVER (ORDER BY x.loading ASC, x.train_idx) AS r_lo
    FROM embedding_loadings x, p WHERE x.fit_id = p.fid AND x.component = p.comp
),
u AS (SELECT * FROM tg UNION ALL SELECT * FROM tr)
SELECT p.fid AS fit_id, p.comp AS component, u.kind, 'high' AS "end", u.r_hi AS "rank", u.idx, u.value
FROM u, p WHERE u.r_hi <= p.kk
UNION ALL
SELECT p.fid, p.comp, u.kind, 'low', u.r_lo, u.idx, u.value
FROM u, p WHERE u.r_lo <= p.kk
ORDER BY 3 DESC, 4, 5;

-- A cluster's member targets (most central first) and its most characteristic train examples.
CREATE OR REPLACE MACRO cluster_ends(fit := NULL, cluster := 0, k := 10) AS TABLE
WITH p AS (
    SELECT fid,
           CASE WHEN NOT dmdb_embedded(fid, 'cluster_ends') THEN NULL
                WHEN EXISTS (SELECT 1 FROM clusters c WHERE c.fit_id = fid AND c.cluster = cluster) THEN cluster
                ELSE error('cluster_ends: fit ' || fid || ' has no cluster ' || coalesce(cluster::VARCHAR, 'NULL')
                           || ' (stored: 0..' || (SELECT max(c.cluster) FROM clusters c WHERE c.fit_id = fid) || ')') END AS cl,
           dmdb_count(k, 1, 'cluster_ends: k') AS kk
    FROM (SELECT dmdb_fit_or_latest(fit) AS fid)
),
tg AS (
    SELECT 'target' AS kind, 'member' AS "end", x.target AS idx, x.centrality AS value,
           row_number() OVER (ORDER BY x.centrality DESC NULLS LAST, x.target) AS r
    FROM clusters x, p WHERE x.fit_id = p.fid AND x.cluster = p.cl
),
hi AS (
    SELECT 'train' AS kind, 'high' AS "end", x.train_idx AS idx, x.mean_weight AS value,
           row_number() OVER (ORDER BY x.mean_weight DESC, x.train_idx) AS r
    FROM cluster_train x, p WHERE x.fit_id = p.fid AND x.cluster = p.cl AND x.mean_weight > 0
),
lo AS (
    SELECT 'train' AS kind, 'low' AS "end", x.train_idx AS idx, x.mean_weight AS value,
           row_number() OVER (ORDER BY x.mean_weight ASC, x.train_idx) AS r
    FROM cluster_train x, p WHERE x.fit_id = p.fid AND x.cluster = p.cl AND x.mean_weight < 0
),
u AS (SELECT * FROM tg UNION ALL SELECT * FROM hi UNION ALL SELECT * FROM lo)
SELECT p.fid AS fit_id, p.cl AS cluster, u.kind, u."end", u.r AS "rank", u.idx, u.value
FROM u, p WHERE u.r <= p.kk
ORDER BY 3 DESC, 4 DESC, 5;
