//! The store contract (`ff_store::contract`) on every backend, one test per contract:
//! memory and SQLite always, PostgreSQL and Redis when configured, the read-only part
//! on the file store; and what is particular to one backend.

use ff_store::contract::Subject;

mod memory {
    use super::*;
    use ff_store::MemoryStore;

    ff_store::store_contract_tests!(|| async { Some(Subject::new(MemoryStore::new())) });
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use ff_core::{FlagDef, Schema, ValueType};
    use ff_store::{FlagReader, FlagWriter, Mutation, SqlStore, StoreError, Write};
    use serde_json::json;

    fn store(dir: &tempfile::TempDir) -> SqlStore {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        SqlStore::connect_lazy(&url).unwrap()
    }

    ff_store::store_contract_tests!(|| async {
        let dir = tempfile::tempdir().unwrap();
        Some(Subject::new(store(&dir)).keeping(dir))
    });

    mod in_memory {
        use super::*;
        ff_store::store_contract_tests!(|| async {
            Some(Subject::new(SqlStore::connect_lazy("sqlite::memory:").unwrap()))
        });
    }

    fn w(m: Mutation) -> Write {
        Write::new("tester@example.com", m)
    }

    fn def(key: &str, ty: ValueType, value: serde_json::Value) -> FlagDef {
        FlagDef {
            key: key.into(),
            value_type: ty,
            value,
            enabled: true,
            off_value: None,
            description: String::new(),
            schema: Schema::default(),
            meta: Default::default(),
            targeting: Default::default(),
        }
    }

    #[tokio::test]
    async fn sqlite_migrations_are_idempotent_and_data_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(&dir);
        a.write(w(Mutation::CreateFlag { def: def("X", ValueType::Bool, json!(true)), if_missing: false }))
            .await
            .unwrap();
        a.close().await;
        let b = store(&dir);
        b.migrate().await.unwrap();
        assert_eq!(b.latest_seq().await.unwrap(), 1);
        assert!(b.flag("X").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused() {
        let err = SqlStore::connect_lazy("mysql://u:secret@h/db").unwrap_err();
        assert!(err.to_string().contains("unsupported store URL"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = ff_store::store_from_url("mysql://u:secret@h/db").err().unwrap();
        assert!(err.to_string().contains("unsupported store URL"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_database_is_an_error_not_a_panic() {
        let store = SqlStore::connect_lazy("sqlite:///nonexistent-dir/for/sure/ff.db").unwrap();
        assert!(matches!(store.load().await, Err(StoreError::Database(_))));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use ff_store::SqlStore;

    ff_store::store_contract_tests!(|| async {
        let url = ff_store::postgres_test_database().await?;
        Some(Subject::new(SqlStore::connect(&url).await.unwrap()))
    });
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;

    ff_store::store_contract_tests!(|| async { ff_store::redis_test_store().await.map(Subject::new) });
}

#[cfg(feature = "file")]
mod file {
    use super::*;
    use ff_store::FileStore;

    ff_store::store_contract_tests!(
        read_only: || async {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("flags.yaml");
                std::fs::write(&path, "flags:\n  - {key: ON, type: bool, value: true}\n").unwrap();
                Some(Subject::new(FileStore::open(&path).unwrap()).keeping(dir))
            }
    );
}
