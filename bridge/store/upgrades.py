"""Versioned schema upgrades (mautrix.util.async_db): add a function, never edit an old one."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme, UpgradeTable

upgrade_table = UpgradeTable(database_name="houseline", version_table_name="houseline_version")


@upgrade_table.register(description="Portals, ghosts and the message map")
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE portal (
            network    TEXT NOT NULL,
            account    TEXT NOT NULL,
            chat_id    TEXT NOT NULL,
            room_id    TEXT NOT NULL UNIQUE,
            name       TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (network, account, chat_id)
        )"""
    )
    await conn.execute(
        """CREATE TABLE ghost (
            user_id     TEXT PRIMARY KEY,
            network     TEXT NOT NULL,
            remote_id   TEXT NOT NULL,
            displayname TEXT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE message (
            network    TEXT NOT NULL,
            account    TEXT NOT NULL,
            chat_id    TEXT NOT NULL,
            remote_id  TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            event_id   TEXT NOT NULL,
            direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            created_at BIGINT NOT NULL,
            PRIMARY KEY (network, account, chat_id, remote_id)
        )"""
    )
    await conn.execute("CREATE INDEX message_event_idx ON message (event_id)")


@upgrade_table.register(description="Media flag on mapped messages, and client reactions")
async def upgrade_v2(conn: Connection, scheme: Scheme) -> None:
    await conn.execute("ALTER TABLE message ADD COLUMN has_media BOOLEAN NOT NULL DEFAULT false")
    await conn.execute(
        """CREATE TABLE reaction (
            network    TEXT NOT NULL,
            account    TEXT NOT NULL,
            chat_id    TEXT NOT NULL,
            target_id  TEXT NOT NULL,
            sender_id  TEXT NOT NULL,
            emoji      TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            event_id   TEXT NOT NULL,
            PRIMARY KEY (network, account, chat_id, target_id, sender_id, emoji)
        )"""
    )


@upgrade_table.register(description="Company accounts, and a status on each portal")
async def upgrade_v3(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE account (
            network    TEXT NOT NULL,
            account_id TEXT NOT NULL,
            owner_id   TEXT NOT NULL,
            owner_name TEXT NOT NULL,
            enabled    BOOLEAN NOT NULL,
            can_reply  BOOLEAN NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (network, account_id)
        )"""
    )
    await conn.execute("ALTER TABLE portal ADD COLUMN status TEXT NOT NULL DEFAULT 'active'")


@upgrade_table.register(description="Audit trail, held messages, offboarded users, counters, disclaimer flag")
async def upgrade_v4(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE audit (
            seq       BIGINT PRIMARY KEY,
            ts_ms     BIGINT NOT NULL,
            actor     TEXT NOT NULL,
            action    TEXT NOT NULL,
            subject   TEXT NOT NULL,
            verdict   TEXT NOT NULL,
            rule      TEXT NOT NULL,
            details   TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash      TEXT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE held (
            room_id  TEXT NOT NULL,
            event_id TEXT NOT NULL,
            event    TEXT NOT NULL,
            held_at  BIGINT NOT NULL,
            PRIMARY KEY (room_id, event_id)
        )"""
    )
    await conn.execute(
        "CREATE TABLE offboarded (user_id TEXT PRIMARY KEY, successor TEXT NOT NULL, at_ms BIGINT NOT NULL)"
    )
    await conn.execute("CREATE TABLE counter (name TEXT PRIMARY KEY, value BIGINT NOT NULL)")
    await conn.execute("ALTER TABLE portal ADD COLUMN disclaimer_sent BOOLEAN NOT NULL DEFAULT false")
    await conn.execute("ALTER TABLE portal ADD COLUMN legal_hold BOOLEAN NOT NULL DEFAULT false")


@upgrade_table.register(
    description="Outbox: employees' events durably queued before the homeserver is answered"
)
async def upgrade_v5(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE outbox (
            event_id    TEXT PRIMARY KEY,
            room_id     TEXT NOT NULL,
            event       TEXT NOT NULL,
            enqueued_at BIGINT NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0
        )"""
    )
    await conn.execute("CREATE INDEX outbox_room_idx ON outbox (room_id, enqueued_at)")


@upgrade_table.register(description="Inbound sends in flight, to settle after a crash")
async def upgrade_v6(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE inflight (
            network   TEXT NOT NULL,
            account   TEXT NOT NULL,
            chat_id   TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            room_id   TEXT NOT NULL,
            PRIMARY KEY (network, account, chat_id, remote_id)
        )"""
    )


@upgrade_table.register(description="Outbound sends in flight")
async def upgrade_v7(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        "CREATE TABLE outflight (event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, since_remote BIGINT NOT NULL)"
    )


@upgrade_table.register(description="Homeserver events already handled")
async def upgrade_v8(conn: Connection, scheme: Scheme) -> None:
    # Dedupe by event rather than by transaction id: a homeserver may resend an event in a new
    # transaction, and the catch-up after a homeserver restart finds events by reading the rooms.
    await conn.execute(
        "CREATE TABLE seen_event (event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, seen_at BIGINT NOT NULL)"
    )
    await conn.execute("CREATE INDEX seen_event_at_idx ON seen_event (seen_at)")


@upgrade_table.register(
    description="Continuity: assignees, absences, invitation codes, clients waiting for an answer"
)
async def upgrade_v9(conn: Connection, scheme: Scheme) -> None:
    # Who looks after a conversation (reminders go to them), and who started it when the
    # company wrote first (the record of an outreach).
    await conn.execute("ALTER TABLE portal ADD COLUMN assignee TEXT")
    await conn.execute("ALTER TABLE portal ADD COLUMN initiated_by TEXT")
    await conn.execute("ALTER TABLE portal ADD COLUMN initiated_at BIGINT")
    await conn.execute(
        """CREATE TABLE absence (
            user_id  TEXT PRIMARY KEY,
            until_ms BIGINT NOT NULL,
            cover    TEXT NOT NULL,
            set_by   TEXT NOT NULL,
            at_ms    BIGINT NOT NULL
        )"""
    )
    # Rooms an absence touched: the cover invited there (undone on return) and whether the
    # client was told already (once per absence).
    await conn.execute(
        """CREATE TABLE absence_room (
            user_id        TEXT NOT NULL,
            room_id        TEXT NOT NULL,
            invited        TEXT NOT NULL,
            client_told    BOOLEAN NOT NULL DEFAULT false,
            PRIMARY KEY (user_id, room_id)
        )"""
    )
    # Only the code's SHA-256 is kept: the store never holds a working link.
    await conn.execute(
        """CREATE TABLE invite_code (
            code_hash  TEXT PRIMARY KEY,
            network    TEXT NOT NULL,
            account    TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at    BIGINT,
            used_chat  TEXT
        )"""
    )
    # A client message nobody has answered yet: since when, and how many reminder steps fired.
    await conn.execute(
        """CREATE TABLE waiting (
            room_id  TEXT PRIMARY KEY,
            since_ms BIGINT NOT NULL,
            event_id TEXT NOT NULL,
            steps    INTEGER NOT NULL DEFAULT 0,
            closed_told BOOLEAN NOT NULL DEFAULT false
        )"""
    )


@upgrade_table.register(
    description="Integrations: client profiles, the webhook and journal queues, the status room"
)
async def upgrade_v10(conn: Connection, scheme: Scheme) -> None:
    # What the company knows of a client beyond the network's profile (edited through the API).
    await conn.execute(
        """CREATE TABLE client_profile (
            network      TEXT NOT NULL,
            remote_id    TEXT NOT NULL,
            display_name TEXT,
            language     TEXT,
            region       TEXT,
            crm_id       TEXT,
            tags         TEXT NOT NULL DEFAULT '[]',
            kyc_status   TEXT,
            consent      TEXT NOT NULL DEFAULT '{}',
            updated_at   BIGINT NOT NULL,
            updated_by   TEXT NOT NULL,
            PRIMARY KEY (network, remote_id)
        )"""
    )
    # Events for the outgoing webhooks: written once, delivered to each receiver that wants
    # them (one hook_delivery row per receiver), in order per conversation.
    await conn.execute(
        """CREATE TABLE hook_event (
            seq        BIGINT PRIMARY KEY,
            id         TEXT NOT NULL UNIQUE,
            type       TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            body       TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE hook_delivery (
            receiver    TEXT NOT NULL,
            seq         BIGINT NOT NULL,
            room_id     TEXT NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            next_at     BIGINT NOT NULL DEFAULT 0,
            last_status TEXT,
            PRIMARY KEY (receiver, seq)
        )"""
    )
    await conn.execute("CREATE INDEX hook_delivery_room_idx ON hook_delivery (receiver, room_id, seq)")
    # Messages waiting to be journaled to the archive, and what the archive accepted.
    await conn.execute(
        """CREATE TABLE journal_queue (
            event_id   TEXT PRIMARY KEY,
            room_id    TEXT NOT NULL,
            due_at     BIGINT NOT NULL,
            attempts   INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )"""
    )
    await conn.execute(
        """CREATE TABLE journal_receipt (
            event_id    TEXT PRIMARY KEY,
            room_id     TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            accepted_at BIGINT NOT NULL,
            response    TEXT NOT NULL
        )"""
    )
    # Rooms the bridge keeps for itself ("Houseline status" for capture health).
    await conn.execute("CREATE TABLE bridge_room (name TEXT PRIMARY KEY, room_id TEXT NOT NULL)")


@upgrade_table.register(
    description="In-flight marks named by direction, an opaque outbound checkpoint, held_for_senior"
)
async def upgrade_v11(conn: Connection, scheme: Scheme) -> None:
    # A client message being posted to Matrix; an employee message being sent to the network.
    await conn.execute("ALTER TABLE inflight RENAME TO inbound_in_flight")
    # The checkpoint is the connector's (Connector.checkpoint): text the core never interprets.
    # A new table rather than a changed column: SQLite cannot change a column's type.
    await conn.execute(
        """CREATE TABLE outbound_in_flight (
            event_id   TEXT PRIMARY KEY,
            room_id    TEXT NOT NULL,
            checkpoint TEXT NOT NULL
        )"""
    )
    await conn.execute(
        "INSERT INTO outbound_in_flight (event_id, room_id, checkpoint)"
        " SELECT event_id, room_id, CAST(since_remote AS TEXT) FROM outflight"
    )
    await conn.execute("DROP TABLE outflight")
    # What the policy holds until a senior joins (join.senior_role), not the legal hold.
    await conn.execute("ALTER TABLE held RENAME TO held_for_senior")


@upgrade_table.register(description="The compliance review queue")
async def upgrade_v12(conn: Connection, scheme: Scheme) -> None:
    # One item per message (a lexicon hit or the random sample); a held one keeps the employee's
    # event until a reviewer approves (it then goes into the outbox) or rejects it.
    await conn.execute(
        """CREATE TABLE review_item (
            id          BIGINT PRIMARY KEY,
            portal_room TEXT NOT NULL,
            event_id    TEXT NOT NULL UNIQUE,
            sender      TEXT NOT NULL,
            direction   TEXT NOT NULL,
            rules       TEXT NOT NULL,
            excerpt     TEXT NOT NULL,
            held        BOOLEAN NOT NULL,
            state       TEXT NOT NULL,
            claimed_by  TEXT,
            closed_by   TEXT,
            reason      TEXT,
            opened_at   BIGINT NOT NULL,
            closed_at   BIGINT,
            review_room TEXT NOT NULL DEFAULT '',
            notice_id   TEXT NOT NULL DEFAULT '',
            event       TEXT
        )"""
    )
    await conn.execute("CREATE INDEX review_item_notice_idx ON review_item (notice_id)")


@upgrade_table.register(description="The profile picture each ghost shows")
async def upgrade_v13(conn: Connection, scheme: Scheme) -> None:
    # The connector's opaque reference of the picture last set as the ghost's avatar (NULL: none
    # set yet), so a restart neither uploads every client's picture again nor misses a change.
    await conn.execute("ALTER TABLE ghost ADD COLUMN picture_ref TEXT")


@upgrade_table.register(description="Find the conversations under way by what the bridge wrote")
async def upgrade_v14(conn: Connection, scheme: Scheme) -> None:
    # A catch-up reads first the rooms the bridge wrote to lately (a client's message it posted,
    # a portal it made), even before the homeserver's echo of them arrived.
    await conn.execute("CREATE INDEX message_created_idx ON message (created_at)")
    await conn.execute("CREATE INDEX portal_created_idx ON portal (created_at)")
