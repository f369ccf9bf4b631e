"""Deliver: from the durable spool to the bucket, exactly as promised.

The spool (`spool`, its file format `spool_format`, its files on disk `spool_segments`, its live
queue `spool_queue`, the offline `spool status|retry` in `spool_commands`), the uploader workers
(`uploader`), the batch layout's file writer (`batch_writer`), and the sinks: S3 (`sink_s3`, with
the bridge's own signed PUT in `s3_put` and `sigv4`) or a local directory (`sink_local`), behind
`sink`'s one interface and classifier of failures.

Receives prepared objects (key, body, bucket, lake partition) from `receive.ingest`; hands them to
the store, retried until stored or quarantined. Must not parse payloads nor decide keys: a
record's key and body arrive made.
"""
