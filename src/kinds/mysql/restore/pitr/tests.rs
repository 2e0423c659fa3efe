use super::replay::{event_timestamp, forward_sql};
use super::*;

#[tokio::test]
async fn replayed_sql_is_forwarded_whole_and_its_newest_event_time_noted() {
    let sql = b"/*!40019 SET @@session.max_delay_time=0*/;\n\
        # at 367\n\
        #241204  8:00:00 server id 1  end_log_pos 448 CRC32 0xa469094b \tQuery\n\
        SET TIMESTAMP=1733300000/*!*/;\nINSERT INTO t VALUES ('\xff\n\
        #301231 23:59:59 server id 1  end_log_pos 1 (a value, not a header)\n');\n\
        # at 627\n# at 676\n\
        #241204  9:05:01 server id 1  end_log_pos 676 CRC32 0x73170120 \tAnnotate_rows:\n\
        #Q> insert into d.t values (1)\n\
        #241204  9:05:01 server id 1  end_log_pos 717 CRC32 0x131801c2 \tTable_map\n\
        COMMIT/*!*/;\n# no newline at the end";
    let mut out = Vec::new();
    let mut newest = Some(1_000);
    forward_sql(&mut &sql[..], &mut out, &mut newest)
        .await
        .unwrap();
    assert_eq!(out, sql);
    // 2024-12-04 09:05:01 UTC, not the look-alike inside the string.
    assert_eq!(newest, Some(1_733_303_101));
    assert_eq!(
        event_timestamp(b"#241204 10:50:04 server id 1  end_log_pos 755 CRC32 0x8f"),
        Some(1_733_309_404)
    );
    assert_eq!(event_timestamp(b"SET TIMESTAMP=1733300000/*!*/;"), None);
    assert_eq!(event_timestamp(b"#Q> insert into t values (1)"), None);
    assert_eq!(event_timestamp(b"# at 755"), None);
}

#[test]
fn binlog_targets_are_whole_seconds_and_a_fraction_names_both_neighbours() {
    let whole: chrono::DateTime<chrono::Utc> = "2026-12-07T10:40:09Z".parse().unwrap();
    assert!(whole_second(&whole).is_ok());
    let far: chrono::DateTime<chrono::Utc> = "2999-01-01T00:00:00Z".parse().unwrap();
    assert!(whole_second(&far).is_ok());
    let frac: chrono::DateTime<chrono::Utc> = "2026-12-07T10:40:09.5Z".parse().unwrap();
    let e = whole_second(&frac).unwrap_err().to_string();
    assert!(
        e.contains("--until '2026-12-07 10:40:09+00'")
            && e.contains("--until '2026-12-07 10:40:10+00'"),
        "{e}"
    );
}
