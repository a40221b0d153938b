//! A plain SQL store for simulated servers: an in-memory SQLite database seeded by the scenario.

use std::sync::Mutex;

use rusqlite::types::{Value as Lite, ValueRef};

use crate::sql::{SqlKind, SqlParams, SqlResult, SqlValue};

/// One simulated server's tables. Statements the scenario's `[[sql]]` rules do not answer run
/// here, so a playbook that writes a row reads it back. SQLite's dialect: plain tables, one schema.
#[derive(Debug)]
pub struct SqlStore {
    db: Mutex<rusqlite::Connection>,
}

fn bind(v: &SqlValue) -> Lite {
    match v {
        SqlValue::Null => Lite::Null,
        SqlValue::Int(i) => Lite::Integer(*i),
        SqlValue::UInt(u) => {
            i64::try_from(*u).map_or_else(|_| Lite::Text(u.to_string()), Lite::Integer)
        }
        SqlValue::Float(f) => Lite::Real(*f),
        SqlValue::Text(t) => Lite::Text(t.clone()),
        SqlValue::Bytes(b) => Lite::Blob(b.clone()),
    }
}

fn read(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Float(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Bytes(b.to_vec()),
    }
}

impl SqlStore {
    /// A store with the scenario's `init` statements run; an error names the statement.
    pub fn new(init: &[String]) -> Result<SqlStore, String> {
        let db = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
        for (i, s) in init.iter().enumerate() {
            db.execute_batch(s)
                .map_err(|e| format!("init[{i}] `{}`: {e}", crate::sql::first_line(s)))?;
        }
        Ok(SqlStore { db: Mutex::new(db) })
    }

    /// Runs one statement; an error is the store's message (the caller makes it a server error).
    pub fn run(
        &self,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
    ) -> Result<SqlResult, String> {
        let db = crate::lock(&self.db);
        run_on(&db, kind, statement, params)
    }
}

/// Runs one statement on `db` (a store's, or a product model's catalog).
pub fn run_on(
    db: &rusqlite::Connection,
    kind: SqlKind,
    statement: &str,
    params: &SqlParams,
) -> Result<SqlResult, String> {
    {
        let sql = match kind {
            SqlKind::Connect => return Ok(SqlResult::default()),
            SqlKind::Begin => "BEGIN",
            SqlKind::Commit => "COMMIT",
            SqlKind::Rollback => "ROLLBACK",
            SqlKind::Query | SqlKind::Exec => statement,
        };
        let mut st = db.prepare(sql).map_err(|e| e.to_string())?;
        let names: Vec<String> = st.column_names().map(|c| c.to_string()).collect();
        match params {
            SqlParams::None => {}
            SqlParams::Positional(v) => {
                for (i, p) in v.iter().enumerate() {
                    st.raw_bind_parameter(i + 1, bind(p))
                        .map_err(|e| e.to_string())?;
                }
            }
            SqlParams::Named(v) => {
                for (k, p) in v {
                    let idx = st
                        .parameter_index(&format!(":{k}"))
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no parameter :{k} in the statement"))?;
                    st.raw_bind_parameter(idx, bind(p))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        let mut out = SqlResult {
            columns: names.clone(),
            ..Default::default()
        };
        {
            let mut rows = st.raw_query();
            while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                out.rows.push(
                    (0..names.len())
                        .map(|i| row.get_ref(i).map_or(SqlValue::Null, read))
                        .collect(),
                );
            }
        }
        drop(st);
        if names.is_empty() {
            out.affected = db.changes();
            out.last_insert_id = Some(db.last_insert_rowid() as u64).filter(|&i| i != 0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_written_are_read_back_with_bound_values() {
        let s = SqlStore::new(&["CREATE TABLE t (id INTEGER, name TEXT)".into()]).unwrap();
        let w = s
            .run(
                SqlKind::Exec,
                "INSERT INTO t VALUES (?, ?), (?, ?)",
                &SqlParams::Positional(vec![
                    SqlValue::Int(1),
                    SqlValue::Text("'; DROP TABLE t; --".into()),
                    SqlValue::Int(2),
                    SqlValue::Text("b".into()),
                ]),
            )
            .unwrap();
        assert_eq!(w.affected, 2);
        let r = s
            .run(
                SqlKind::Query,
                "SELECT name FROM t WHERE id = :id",
                &SqlParams::Named(vec![("id".into(), SqlValue::Int(1))]),
            )
            .unwrap();
        assert_eq!(
            r.rows,
            vec![vec![SqlValue::Text("'; DROP TABLE t; --".into())]]
        );
        assert!(s
            .run(SqlKind::Query, "SELECT * FROM nope", &SqlParams::None)
            .is_err());
        assert!(SqlStore::new(&["CREATE TABL x".into()])
            .unwrap_err()
            .contains("init[0]"));
    }
}
