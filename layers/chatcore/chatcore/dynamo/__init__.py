"""The DynamoDB adapter: the single table's layout and the session store.

PK = SESSION#<sid>   SK = META                 the session (a tombstone after delete)
PK = SESSION#<sid>   SK = MSG#<seq:010d>       one message (its JSON in ``body``)
PK = SESSION#<sid>   SK = CMID#<client id>     the seq a client message id was stored at
PK = SESSION#<sid>   SK = OP#<operation id>    a marker of the session's operation
PK = SESSION#<sid>   SK = FEEDBACK#<turn id>   the owner's rating of one answer
PK = USER#<uid>      SK = CONTEXT             what the assistant knows about the user (versioned)
PK = OP#<operation id>   SK = META            the operation (chatcore.operations.records)
PK = CALLBACK#<digest>   SK = SIGNATURE       a used callback signature
GSI ByUser:           GSI1PK = USER#<uid>,                                  GSI1SK = <updated_at>#<sid>
GSI ByUserStatus:     GSI2PK = USER#<uid>#STATUS#<status>,                  GSI1SK (listing by status)
GSI ByUserTypeStatus: GSI3PK = USER#<uid>#TYPE#<chat_type>#STATUS#<status>, GSI1SK (by type, or type and status)

Modules, each with one reason to change:

    keys         key shapes, prefixes, attribute values, the shared conditions
    expressions  the one builder of update / condition / key / filter expressions
    codecs       items <-> ChatSession / ChatMessage
    table        the table's requests (every one through ``chatcore.aws.call``)
    reads        load, load_meta, list_for_user
    appends      save: create and append transactions, retried after a lost race; replace_pending
    leases       the turn lease: acquire, release, the condition a turn's writes carry (TurnGuard)
    fields       META field updates: title/type/status/metadata, owner, context summary
    deletion     tombstone and sweep
    feedback     ratings of answers: put (guarded by the session), delete, read by turn ids
    user_context the per-user context item: load, versioned save
    store        SessionStore, the facade over the above
    backfill     once after the filtered indexes were added: their keys for sessions stored before them

Nothing here imports botocore: ``chatcore.aws.call`` translates its errors into ``chatcore.errors``.
"""
