"""The lake: what lies in the bucket, and how it is read back.

Where each thing goes: a record's object key in the trace layout (`keys`), a record's hour
partition and a batch file's name (`partitions`); what it is: the record's fields (`record`), its
JSON body (`encode`), the batch files' columns and encoding (`schema`, which also holds the rule
that keeps the newest version of each call). And the readers: `read` (records of a window, from
either layout), `compact`, `report` and `report_html`.

Pure where it names and encodes (no I/O, no clock: the hot path places records without loading
pyarrow); the readers read the store and never write to it, but for `compact`. Must not import the
stages above it (receive, decode, deliver) nor the configuration: a command hands the readers a
`read.Store` saying where the records lie.
"""
