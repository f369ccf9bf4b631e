"""What each key may store and how fast it may send, applied between decoding and the spool.

Receives a record (or a logs export's GenAI events) and the sending key's `RecordPolicy`; hands
back the record as the policy allows it (content kept, dropped or hashed; identities kept,
pseudonymized or dropped) or says it is sampled out. Also the per-key rate limits (`limits`), which
the ingest path asks before decoding. Pure but for reading the pseudonym secret's file; must not
import a stage above it (the conventions hand it `Places`), touch the spool or answer a client.
"""
