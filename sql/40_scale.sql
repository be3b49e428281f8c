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
-- read_parquet(glob), casting mask::BIT.
CREATE OR REPLACE MACRO read_shards(files) AS TABLE
SELECT m.experiment, s.run_id, s.role, s.mask::BIT AS mask, s.n_kept, s.margins, s.seed, s.worker,
       s.duration_s, s.info::JSON AS info, s.filename AS file
FROM read_parquet(files, filename := true) s
JOIN (SELECT file_name, decode(value)::JSON ->> 'experiment' AS experiment
      FROM parquet_kv_metadata(files) WHERE decode(key) = 'dmdb') m
  ON m.file_name = s.filename;
