-- Shard files queried in place, without ingesting them. Re-created by the writable open that first sees a
-- changed sql/ (a new dmdb release): a view or macro dropped or redefined by hand stays so until then.
--
--   SELECT experiment, role, count(*), avg(n_kept) FROM read_shards('study.duckdb.shards/*.parquet') GROUP BY ALL;
--   SELECT run_id, get_bit(mask, 17) AS has_17, margins[1] FROM read_shards('shards/**/*.parquet');
--
-- Columns are those of the runs table: mask is a BIT string like runs.mask (get_bit(mask, i) is
-- train example i), margins a FLOAT list; `experiment` comes from the file's dmdb metadata, `file`
-- is the shard's path. Files written by `dmdb export --runs-out` are shards too. A run retried after
-- a killed worker can appear in two files with the same data: add DISTINCT ON (experiment, run_id)
-- where that matters. Plain DuckDB without dmdb reads the same files with
-- read_parquet(glob), casting mask::BIT. Files of `dmdb export --weights-out / --fit-targets-out` carry dmdb
-- metadata too, but no shard version: their rows are left out (a query that reads the shards' columns
-- over a glob that matches them fails in read_parquet, naming the file: a glob of shards only).
CREATE OR REPLACE MACRO read_shards(files) AS TABLE
SELECT m.experiment, s.run_id, s.role, s.mask::BIT AS mask, s.n_kept, s.margins, s.seed, s.worker,
       s.duration_s, s.info::JSON AS info, s.filename AS file
FROM read_parquet(files, filename := true) s
JOIN (SELECT file_name, decode(value)::JSON ->> 'experiment' AS experiment
      FROM parquet_kv_metadata(files)
      -- (CASE: DuckDB may evaluate the JSON cast before the key test, and other keys are not JSON)
      WHERE CASE WHEN decode(key) = 'dmdb' THEN decode(value)::JSON ->> 'version' IS NOT NULL ELSE false END) m
  ON m.file_name = s.filename;
