"""The PostgreSQL store: a version's chunks in one table, vectors in a pgvector column with an HNSW index and terms in
a tsvector column with a GIN index; hybrid search (dense + BM25, fused by RRF) in one SQL statement.

Tables, in the schema of the `pg_schema` setting (the store drops only tables named like its own):

    current            one row: the published version (`publish` switches it in one transaction)
    versions           the manifest, chunk count and average chunk length (in terms) of each kept version
    chunks_v000007     a version's chunks: seq (their order, which breaks ties), text, offsets, vector, terms
    articles_v000007   a version's articles
    terms_v000007      a version's document frequency per term (BM25's idf needs no scan)
    builds, build_queue, build_chunks
                       while a build shared by several `rag index` runs is open (setting index_batch): its plan,
                       the articles to embed (each worker claims some at a time) and the chunks embedded so far

BM25 is computed as bm25s computes it (Lucene's idf, k1 1.5, b 0.75, no (k1 + 1) factor) over the terms of
rag.normalize.terms, so both stores rank alike. A reader pins the version it first reads, like a loaded FAISS index,
until `refresh`; the previous version is kept until the next publish.
"""

from __future__ import annotations

import contextlib
import re
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from rag.article import Article
from rag.chunk import Chunk
from rag.config import Config
from rag.errors import RagError, require
from rag.normalize import terms as text_terms
from rag.stores.base import (
    BM25_B,
    BM25_K1,
    BM25_MANIFEST,
    DEPTH,
    RRF_K,
    Mode,
    Passage,
    Store,
    bm25_idf,
    check_manifest,
)

HNSW_MAX_DIMS = 2000  # pgvector indexes vectors of up to 2,000 dimensions; longer ones are searched exactly
MIN_EF_SEARCH = 40  # pgvector's default hnsw.ef_search; a search sets at least twice its depth
MIN_PGVECTOR = (0, 5, 0)  # HNSW came with pgvector 0.5
EXTENSION = "vector"
LOCK_CLASS = 0x52414731  # advisory locks of this project: (LOCK_CLASS, hashtext(schema))
QUEUE_LOCK_CLASS = LOCK_CLASS + 1  # held by the worker that opens, or publishes, a shared build
CONNECT_TIMEOUT = 10  # seconds
MAX_LEXEME_BYTES = 2047  # a tsvector lexeme is at most 2,047 bytes: longer "terms" (no word is) are not indexed
MAX_POSITIONS = 256  # tsvector keeps at most 256 positions per lexeme: term counts are capped there
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_OWN_TABLE = re.compile(r"^(chunks|articles|terms)_v(\d{6,})$")

# Statements. {chunks}, {articles}, {terms} are the tables of one version (names the store made).

CREATE_FIXED = """
CREATE TABLE IF NOT EXISTS versions (
    version integer PRIMARY KEY, manifest jsonb NOT NULL, chunks integer NOT NULL, avg_length float8 NOT NULL);
CREATE TABLE IF NOT EXISTS current (one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL);
"""
ARTICLE_TABLE = ("id text PRIMARY KEY, title text NOT NULL, date text, text text NOT NULL, sha256 text NOT NULL, "
                 "format text NOT NULL")
CHUNK_TABLE = ('seq integer NOT NULL, id text NOT NULL, article_id text NOT NULL, title text NOT NULL, date text, '
               'start integer NOT NULL, "end" integer NOT NULL, text text NOT NULL, length integer NOT NULL, '
               'terms tsvector NOT NULL, embedding {vector} NOT NULL')
CREATE_ARTICLES = f"CREATE TABLE {{articles}} ({ARTICLE_TABLE})"
CREATE_CHUNKS = f"CREATE TABLE {{chunks}} ({CHUNK_TABLE.format(vector='vector({dims})')})"
ARTICLE_COLUMNS = "id, title, date, text, sha256, format"
CHUNK_COLUMNS = 'seq, id, article_id, title, date, start, "end", text, length, terms, embedding'
COPY_KEPT_ARTICLES = f"INSERT INTO {{articles}} SELECT {ARTICLE_COLUMNS} FROM {{old}} WHERE id = ANY(%s)"
# Kept chunks keep their order and are numbered from 0; the new ones follow (as the FAISS store orders them).
COPY_KEPT_CHUNKS = f"""
INSERT INTO {{chunks}} ({CHUNK_COLUMNS})
SELECT row_number() OVER (ORDER BY seq) - 1, {CHUNK_COLUMNS.removeprefix('seq, ')} FROM {{old}}
WHERE article_id = ANY(%s)
"""
INDEX_CHUNKS = """
ALTER TABLE {chunks} ADD PRIMARY KEY (seq);
CREATE INDEX ON {chunks} (article_id);
CREATE INDEX ON {chunks} USING gin (terms);
"""
INDEX_HNSW = """
CREATE INDEX ON {chunks} USING hnsw (embedding vector_ip_ops) WITH (m = {m}, ef_construction = {ef_construction})
"""
# ts_stat counts, per lexeme, the chunks that hold it: the document frequency.
CREATE_TERMS = """
CREATE TABLE {terms} AS SELECT word AS term, ndoc AS df FROM ts_stat('SELECT terms FROM {chunks}');
ALTER TABLE {terms} ADD PRIMARY KEY (term);
ANALYZE {chunks}; ANALYZE {terms};
"""
# The mean is computed as numpy computes bm25s's: an exact sum of whole numbers, divided once.
CHUNK_STATS = "SELECT count(*), coalesce(sum(length)::float8 / nullif(count(*), 0), 1) FROM {chunks}"
INSERT_VERSION = "INSERT INTO versions (version, manifest, chunks, avg_length) VALUES (%s, %s, %s, %s)"
SWITCH = "INSERT INTO current (version) VALUES (%s) ON CONFLICT (one) DO UPDATE SET version = excluded.version"
READ_CURRENT = "SELECT v.version, v.manifest, v.chunks, v.avg_length FROM current c JOIN versions v USING (version)"
READ_ARTICLE = f"SELECT {ARTICLE_COLUMNS} FROM {{articles}} WHERE id = %s"
READ_DF = "SELECT term, df FROM {terms} WHERE term = ANY(%s)"
READ_CHUNKS = """
SELECT id, article_id, title, date, start, "end", text, embedding FROM {chunks} WHERE article_id = ANY(%s) ORDER BY seq
"""
OWN_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = %s"
DROP_TABLES = "DROP TABLE IF EXISTS {chunks}, {articles}, {terms}"
FORGET_VERSION = "DELETE FROM versions WHERE version = %s"

# A shared build: created by the worker that opens it, dropped in the transaction that publishes it, so the tables
# exist exactly while a build is open. The queue holds the articles to embed in their order; a worker claims some
# with FOR UPDATE SKIP LOCKED and holds them in its transaction until their chunks are staged and they are marked
# done: if it dies, the server rolls that back and they are free again. Staged chunks keep their article's position.
CREATE_BUILD = f"""
CREATE TABLE builds (build uuid PRIMARY KEY, plan jsonb NOT NULL, base integer, keep text[] NOT NULL);
CREATE TABLE build_queue (position integer NOT NULL, {ARTICLE_TABLE}, done boolean NOT NULL DEFAULT false);
CREATE INDEX build_queue_todo ON build_queue (position) WHERE NOT done;
CREATE TABLE build_chunks (position integer NOT NULL, {CHUNK_TABLE.format(vector='vector')});
"""
DROP_BUILD = "DROP TABLE IF EXISTS builds, build_queue, build_chunks"
INSERT_BUILD = "INSERT INTO builds (build, plan, base, keep) VALUES (%s, %s, %s, %s)"
BUILD_OPEN = "SELECT FROM pg_tables WHERE schemaname = %s AND tablename = 'builds'"
READ_BUILD = "SELECT build, plan, base, keep FROM builds"
THIS_BUILD = "AND EXISTS (SELECT FROM builds WHERE build = %(build)s)"
CLAIM = f"""
SELECT position, {ARTICLE_COLUMNS} FROM build_queue WHERE NOT done {THIS_BUILD}
ORDER BY position LIMIT %(n)s FOR UPDATE SKIP LOCKED
"""
# Blocks while the first unfinished article is claimed by another worker; no row once every article is in.
WAIT = f"SELECT position FROM build_queue WHERE NOT done {THIS_BUILD} ORDER BY position LIMIT 1 FOR UPDATE"
MARK_DONE = "UPDATE build_queue SET done = true WHERE position = ANY(%s)"
STAGED_ENTRIES = """
SELECT q.id, q.sha256, q.title, q.date, q.format, count(c.seq) FROM build_queue q LEFT JOIN build_chunks c
USING (position) GROUP BY q.id
"""
COPY_STAGED_ARTICLES = f"INSERT INTO {{articles}} SELECT {ARTICLE_COLUMNS} FROM build_queue"
COPY_STAGED_CHUNKS = f"""
INSERT INTO {{chunks}} ({CHUNK_COLUMNS})
SELECT %s + row_number() OVER (ORDER BY position, seq) - 1, {CHUNK_COLUMNS.removeprefix('seq, ')} FROM build_chunks
"""
# A worker's session: the server ends it, and so its claim, about 90 s after the worker's machine stops answering
# (TCP keepalives; not on Unix sockets, where a dead process is seen at once), and never ends it for being idle in a
# transaction (a claim is, while its articles are embedded).
WORKER_SESSION = """
SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 6;
SET idle_in_transaction_session_timeout = 0
"""

# Search: one statement. `weights` holds the question's terms that the index knows, each weighted by its idf times
# how often the question asks for it (bm25s scores a repeated term again); `query` matches them in the GIN index.
# BM25 of chunk c: for each matched term, weight * tf / (k1 * (1 - b + b * length / avg_length) + tf), with tf read
# from c's tsvector after keeping only the question's lexemes (setweight marks them A, ts_filter keeps A).
BM25_OF_C = """(
    SELECT coalesce(sum(w.weight * m.tf / (%(k1)s * (1 - %(b)s + %(b)s * c.length / %(avg)s) + m.tf)), 0)
    FROM (SELECT lexeme, array_length(positions, 1) AS tf
          FROM unnest(ts_filter(setweight(c.terms, 'A', (SELECT lexemes FROM query)), '{{a}}'))) AS m
    JOIN weights w ON w.term = m.lexeme)"""
# The exact BM25 top `depth` without scoring every chunk that holds a common term (MaxScore, Turtle & Flood 1995):
# a term adds less than its weight to any chunk's score (tf / (K + tf) < 1). `probe` scores the chunks holding the
# weightiest term; its depth-th best score is a lower bound of the depth-th best overall. The lightest terms whose
# weights sum to no more than that bound cannot rank a chunk on their own: only chunks holding one of the other
# (`essential`) terms are scored, and on all the question's terms.
SEARCH = """
WITH weights AS (
    SELECT t.term, count(*) * ln(1 + (%(n)s - t.df + 0.5) / (t.df + 0.5)) AS weight
    FROM unnest(%(terms)s::text[]) AS q(term) JOIN {terms} t USING (term) GROUP BY t.term, t.df
), query AS (
    SELECT array_agg(term) AS lexemes FROM weights
), probe AS (
    SELECT BM25_OF_C AS bm25 FROM {chunks} c
    WHERE c.terms @@ (SELECT quote_literal(term)::tsquery FROM weights ORDER BY weight DESC, term LIMIT 1)
    ORDER BY bm25 DESC LIMIT %(depth)s
), essential AS (
    SELECT string_agg(quote_literal(term), ' | ')::tsquery AS tsquery
    FROM (SELECT term, sum(weight) OVER (ORDER BY weight, term) AS lighter FROM weights) AS w
    WHERE lighter > (SELECT CASE WHEN count(*) = %(depth)s THEN min(bm25) ELSE 0 END FROM probe)
), dense AS (
    SELECT seq, embedding <#> %(vector)s::vector AS distance FROM {chunks}
    ORDER BY embedding <#> %(vector)s::vector LIMIT %(depth)s
), lexical AS (
    SELECT c.seq, BM25_OF_C AS bm25 FROM {chunks} c WHERE c.terms @@ (SELECT tsquery FROM essential)
    ORDER BY bm25 DESC, c.seq LIMIT %(depth)s
), ranked AS (
    RANKED
)
SELECT c.id, c.article_id, c.title, c.date, c.start, c."end", c.text, r.score,
       -(c.embedding <#> %(vector)s::vector) AS cosine, BM25_OF_C AS bm25
FROM ranked r JOIN {chunks} c USING (seq) ORDER BY r.score DESC, r.seq
""".replace("BM25_OF_C", BM25_OF_C)
# Per mode: the k best rows and their scores. Hybrid is reciprocal rank fusion as rag.stores.base.rrf: 1 / (k + rank)
# summed over the two rankings, in float8 as Python sums it, ties broken by row order.
RANKED = {
    "dense": "SELECT seq, -distance AS score FROM dense ORDER BY score DESC, seq LIMIT %(k)s",
    "bm25": "SELECT seq, bm25 AS score FROM lexical ORDER BY score DESC, seq LIMIT %(k)s",
    "hybrid": """SELECT seq, sum(1 / (%(rrf_k)s + rank)) AS score FROM (
        SELECT seq, row_number() OVER (ORDER BY distance, seq) AS rank FROM dense
        UNION ALL
        SELECT seq, row_number() OVER (ORDER BY bm25 DESC, seq) AS rank FROM lexical) AS ranks
    GROUP BY seq ORDER BY score DESC, seq LIMIT %(k)s""",
}


def _psycopg():
    return require("psycopg", "store = pgvector", "pip install 'psycopg[binary]'")


def shown_dsn(dsn: str) -> str:
    """The connection string as messages show it: user, host, port and database, never the password."""
    psycopg = _psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's message may quote the string, password included: say nothing of it.
        raise RagError("setting pg_dsn (or RAG_PG_DSN) is not a PostgreSQL connection string: write "
                       "postgresql://user:password@host:port/database or key=value pairs") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _reason(error: Exception) -> str:
    """One line saying why a PostgreSQL call failed (libpq and the server never quote the password)."""
    diag = getattr(error, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(error).strip()
    return text.splitlines()[0].removeprefix("connection failed: ") if text else type(error).__name__


def _table(kind: str, version: int) -> str:
    return f"{kind}_v{version:06d}"


def _tables(version: int) -> dict[str, str]:
    return {kind: _table(kind, version) for kind in ("chunks", "articles", "terms")}


def _vector_literal(vector: np.ndarray) -> str:
    # float32 values printed as doubles: pgvector reads them back to the same float32 values.
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).ravel().tolist())) + "]"


def _vector_from(data: bytes) -> np.ndarray:
    """A vector from pgvector's binary form: dimensions (int16), unused (int16), big-endian float32 values."""
    return np.frombuffer(data, dtype=">f4", offset=4)


def _copy_row(fields: list[bytes | None]) -> bytes:
    """One row of COPY's binary format: field count, then each field's length (-1 for NULL) and bytes."""
    out = [struct.pack(">h", len(fields))]
    for field in fields:
        out.append(struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field)
    return b"".join(out)


def _int(value: int) -> bytes:
    return struct.pack(">i", value)


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode("utf-8")


def _vector_bytes(vector: np.ndarray) -> bytes:
    return struct.pack(">hh", len(vector), 0) + np.asarray(vector, dtype=">f4").tobytes()


def tsvector_bytes(terms: list[str]) -> bytes:
    """A tsvector in binary form with each term as a lexeme whose positions 1..n count its n occurrences (built
    here, not by to_tsvector: Postgres' parser would split some tokens again, by rules that depend on the locale)."""
    counts = Counter(t for t in terms if 0 < len(t.encode("utf-8")) <= MAX_LEXEME_BYTES)
    out = [_int(len(counts))]
    for term, n in counts.items():
        n = min(n, MAX_POSITIONS)
        out.append(term.encode("utf-8") + b"\x00" + struct.pack(f">H{n}H", n, *range(1, n + 1)))
    return b"".join(out)


def chunk_fields(seq: int, chunk: Chunk, vector: np.ndarray) -> list[bytes]:
    """A chunk's fields in binary COPY form (CHUNK_COLUMNS), with its terms as rag.stores.faiss.make_bm25 takes them."""
    terms = text_terms(f"{chunk.title}\n{chunk.text}")
    return [_int(seq), _text(chunk.id), _text(chunk.article_id), _text(chunk.title), _text(chunk.date),
            _int(chunk.start), _int(chunk.end), _text(chunk.text), _int(max(1, len(terms))),
            tsvector_bytes(terms), _vector_bytes(vector)]  # bm25s counts an empty chunk as one term


def article_fields(article: Article) -> list[bytes | None]:
    """An article's fields in binary COPY form (ARTICLE_COLUMNS)."""
    return [_text(article.id), _text(article.title), _text(article.date), _text(article.text),
            _text(article.sha256), _text(article.format)]


def _copy_rows(conn, table: str, columns: str, rows: Iterable[list[bytes | None]]) -> None:
    """Send rows of fields to a table by binary COPY."""
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(COPY_HEADER)
        for fields in rows:
            copy.write(_copy_row(fields))
        copy.write(COPY_TRAILER)


@dataclass
class Version:
    """One published version, as a reader pinned it."""

    number: int
    manifest: dict
    chunks: int
    avg_length: float

    @property
    def tables(self) -> dict[str, str]:
        """Its tables' names."""
        return _tables(self.number)


class PgVectorStore(Store):
    """Tables in a PostgreSQL database with the pgvector extension: for search at scale and for many readers."""

    name = "pgvector"

    def __init__(self, dsn: str, schema: str = "rag", hnsw_m: int = 32, hnsw_ef_construction: int = 128):
        if not schema:
            raise RagError("setting pg_schema must name a schema, e.g. rag")
        if not 2 <= hnsw_m <= 100 or not 2 * hnsw_m <= hnsw_ef_construction <= 1000:  # pgvector's own limits
            raise RagError(f"settings pg_hnsw_m ({hnsw_m}) and pg_hnsw_ef_construction ({hnsw_ef_construction}): "
                           "pg_hnsw_m must be 2-100 and pg_hnsw_ef_construction from 2 x pg_hnsw_m to 1000")
        self.dsn, self.schema = dsn, schema
        self.hnsw = {"m": hnsw_m, "ef_construction": hnsw_ef_construction}
        self.where = f"{shown_dsn(dsn)} (schema {schema})"
        self._conn = None
        self._ef_search = 0  # the session's hnsw.ef_search, once set
        self._server_ef_search = MIN_EF_SEARCH
        self._pinned: Version | None = None
        self._writer = None  # the connection holding the build lock, while `building`
        self._build: uuid.UUID | None = None  # the shared build this worker opened or joined
        self._lock = threading.Lock()  # one statement at a time on the shared connection

    @classmethod
    def from_config(cls, config: Config, spec: str = "") -> PgVectorStore:
        """The database of config.pg_dsn, tables in schema config.pg_schema."""
        if not config.pg_dsn.strip():
            raise RagError("store = pgvector needs a database: set pg_dsn in rag.toml or the RAG_PG_DSN variable "
                           "(postgresql://user:password@host:port/database)")
        return cls(config.pg_dsn, config.pg_schema, config.pg_hnsw_m, config.pg_hnsw_ef_construction)

    # Connections and errors.

    def _fail(self, error: Exception, doing: str) -> RagError:
        return RagError(f"PostgreSQL at {self.where} failed {doing} ({_reason(error)})")

    def _connect(self):
        """A new autocommit connection whose search path is the schema, then pgvector's schema."""
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="rag")
        except psycopg.Error as e:
            raise RagError(f"cannot connect to PostgreSQL at {shown_dsn(self.dsn)} "
                           f"({_reason(e)}): check the setting pg_dsn (or RAG_PG_DSN) and that the "
                           "server is running") from None
        try:
            self._set_search_path(conn)
            setting = conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone()[0]
        except psycopg.Error as e:
            conn.close()
            raise self._fail(e, "to start a session") from None
        self._server_ef_search = max(MIN_EF_SEARCH, int(setting or 0))  # a DBA's ALTER DATABASE … SET counts
        return conn

    def _set_search_path(self, conn) -> None:
        conn.execute("""SELECT set_config('search_path', concat_ws(', ', quote_ident(%s), (
                            SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n
                            ON n.oid = e.extnamespace WHERE e.extname = %s)), false)""", (self.schema, EXTENSION))

    @property
    def conn(self):
        """The reading connection (opened on first use, again after it broke)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
            self._ef_search = 0
        return self._conn

    def close(self) -> None:
        """Close the reading connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Reading.

    def _current(self) -> Version:
        psycopg = _psycopg()
        try:
            with self._lock:
                row = self.conn.execute(READ_CURRENT).fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            row = None
        except psycopg.Error as e:
            raise self._fail(e, "to read the published version") from None
        if row is None:
            raise RagError(f"no index in {self.where}: run `rag index` to build it from your articles")
        number, manifest, chunks, avg_length = row
        return Version(number, check_manifest(manifest, self.where), chunks, avg_length)

    @property
    def version(self) -> Version:
        """The pinned version (the published one when first asked for)."""
        if self._pinned is None:
            self._pinned = self._current()
        return self._pinned

    def refresh(self) -> bool:
        """Pin the published version if it is newer than the pinned one."""
        current = self._current()
        changed = self._pinned is None or current.number != self._pinned.number
        self._pinned = current
        return changed

    def _read(self, statement: str, params: dict | tuple, binary: bool = False, ef_search: int = 0) -> list[tuple]:
        """Rows of a statement on the pinned version's tables; when a later build dropped them, on the published
        version's."""
        psycopg = _psycopg()
        for _ in range(3):
            version = self.version
            try:
                with self._lock:
                    conn = self.conn
                    if ef_search > self._ef_search:
                        conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
                        self._ef_search = ef_search
                    cur = conn.cursor(binary=binary)
                    return cur.execute(statement.format(**version.tables), params).fetchall()
            except psycopg.errors.UndefinedTable:
                self._pinned = None  # two builds published since it was pinned: read the current one
            except psycopg.Error as e:
                raise self._fail(e, "to read the index") from None
        raise RagError(f"the index in {self.where} kept changing while reading; try again")

    def manifest(self) -> dict:
        return self.version.manifest

    def count(self) -> int:
        return self.version.chunks

    def article(self, article_id: str) -> Article:
        rows = self._read(READ_ARTICLE, (article_id,))
        if not rows:
            raise RagError(f"no indexed article named {article_id!r}")
        return Article(*rows[0])

    def idf(self, terms: Iterable[str]) -> dict[str, float]:
        terms = list(terms)
        df = dict(self._read(READ_DF, (terms,))) if terms else {}
        return {t: bm25_idf(self.version.chunks, df.get(t, 0)) for t in terms}

    def search(self, vector: np.ndarray, terms: list[str], k: int, mode: Mode = "hybrid",
               depth: int = DEPTH) -> list[Passage]:
        version = self.version
        if not version.chunks:
            return []
        depth = max(depth, k)
        params = {"terms": list(terms), "vector": _vector_literal(vector), "depth": depth, "k": k,
                  "rrf_k": float(RRF_K), "n": float(version.chunks), "avg": version.avg_length,
                  "k1": BM25_K1, "b": BM25_B}
        # HNSW returns at most ef_search candidates: ask for twice the depth (or the server's setting if higher).
        rows = self._read(SEARCH.replace("RANKED", RANKED[mode]), params,
                          ef_search=max(self._server_ef_search, 2 * depth))
        return [Passage(Chunk(*row[:7]), float(row[7]), float(row[8]), float(row[9])) for row in rows]

    def chunks_of(self, article_ids: Iterable[str]) -> tuple[list[Chunk], np.ndarray]:
        rows = self._read(READ_CHUNKS, (list(article_ids),), binary=True)
        dims = self.version.manifest["embedder"]["dims"]
        vectors = np.array([_vector_from(row[7]) for row in rows], dtype=np.float32).reshape(len(rows), dims)
        return [Chunk(*row[:7]) for row in rows], vectors

    # Writing.

    @contextlib.contextmanager
    def building(self, shared: bool = False) -> Iterator[None]:
        """Held while one `rag index` builds (see Store.building); with shared, while one worker of a build that
        any number of them share (`open_or_join`, `work`, `finish`), which only a build alone excludes."""
        conn = self._connect()
        try:
            self._lock_for_build(conn, shared)
            with self._queue_lock(conn):  # workers started at once would create the schema and tables twice
                self._prepare(conn)
            if shared:
                conn.execute(WORKER_SESSION)
            else:
                self._drop_leftovers(conn, builds=True)
            self._writer, self._pinned = conn, None  # what is published now, read again under the lock
            yield
        finally:
            self._writer = None
            conn.close()  # ends the session, and with it the build lock

    def _lock_for_build(self, conn, shared: bool) -> None:
        psycopg = _psycopg()
        take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        try:
            locked = conn.execute(f"SELECT {take}(%s, hashtext(%s))", (LOCK_CLASS, self.schema))
            if not locked.fetchone()[0]:
                raise RagError(f"another `rag index` is writing {self.where}; wait for it to finish")
        except psycopg.Error as e:
            raise self._fail(e, "to take the build lock") from None

    def _prepare(self, conn) -> None:
        """Check that this role can build here (a primary, pgvector >= 0.5, the schema writable); create the
        extension if allowed, the schema and the fixed tables if missing."""
        psycopg = _psycopg()
        try:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                raise RagError(f"{self.where} is a read-only replica: run `rag index` against the primary")
            self._ensure_extension(conn)
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(self.schema)))
            if not conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (self.schema,)).fetchone()[0]:
                raise RagError(f"PostgreSQL role {conn.info.user} may not create tables in schema {self.schema} of "
                               f"{shown_dsn(self.dsn)}: GRANT CREATE ON SCHEMA {self.schema} to it, or choose "
                               "another pg_schema; nothing was changed")
            self._set_search_path(conn)
            conn.execute(CREATE_FIXED)
        except psycopg.Error as e:
            raise RagError(f"cannot write the index in {self.where} ({_reason(e)}); nothing was "
                           "changed") from None

    def _ensure_extension(self, conn) -> None:
        psycopg = _psycopg()
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (EXTENSION,)).fetchone()
        if row is None:
            try:
                conn.execute(psycopg.sql.SQL("CREATE EXTENSION {} SCHEMA public").format(
                    psycopg.sql.Identifier(EXTENSION)))
            except psycopg.Error as e:
                raise RagError(f"the database {shown_dsn(self.dsn)} has no pgvector extension and this role cannot "
                               f"create it ({_reason(e)}): have a superuser run "
                               f"`CREATE EXTENSION {EXTENSION};` in it (pgvector 0.5 or later)") from None
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (EXTENSION,)).fetchone()
        if tuple(int(part) for part in re.findall(r"\d+", row[0])[:3]) < MIN_PGVECTOR:
            raise RagError(f"the database {shown_dsn(self.dsn)} has pgvector {row[0]}; HNSW needs 0.5 or later: "
                           f"install a newer pgvector and run `ALTER EXTENSION {EXTENSION} UPDATE;`")

    def _versions(self, conn) -> set[int]:
        return {number for (number,) in conn.execute("SELECT version FROM versions")}

    def _own_versions(self, conn) -> set[int]:
        """The versions that have tables in the schema (named as the store names them)."""
        names = (name for (name,) in conn.execute(OWN_TABLES, (self.schema,)))
        return {int(m.group(2)) for name in names if (m := _OWN_TABLE.match(name))}

    def _drop_leftovers(self, conn, builds: bool) -> None:
        """Drop the tables a killed build left: those of no recorded version (we hold the build lock, or publish a
        shared build) and, with builds, a shared build whose workers are all gone (we hold the build lock alone)."""
        psycopg = _psycopg()
        try:
            kept = self._versions(conn)
            for number in self._own_versions(conn) - kept:
                self._drop_version(conn, number)
            if builds:
                conn.execute(DROP_BUILD)
        except psycopg.Error as e:
            raise RagError(f"cannot write the index in {self.where} ({_reason(e)}); nothing was "
                           "changed") from None

    def publish(self, manifest: dict, keep: set[str], articles: list[Article], chunks: list[Chunk],
                vectors: np.ndarray) -> dict:
        base = self._pinned.number if self._pinned else None  # read by the builder's call to manifest()
        return self._publish(self._writer, manifest, keep, base,
                             lambda conn, tables, kept: self._copy_new(conn, tables, kept, articles, chunks, vectors))

    def _publish(self, conn, manifest: dict, keep: set[str], base: int | None,
                 fill: Callable[[object, dict[str, str], int], None], closing: str = "") -> dict:
        """Write a new version (the kept articles' rows copied from version base, then fill(conn, tables, number of
        kept chunks) adds the new ones) and make it current in one transaction, which also runs `closing`."""
        psycopg = _psycopg()
        dims = manifest["embedder"]["dims"]
        kind = "hnsw-m{m}-efc{ef_construction}-ip".format(**self.hnsw) if dims <= HNSW_MAX_DIMS else "exact-ip"
        added = {"store": self.name, "dense": {"type": kind, "metric": "inner_product", "normalized": True},
                 "bm25": BM25_MANIFEST}
        number = 1 + max(self._versions(conn) | self._own_versions(conn), default=0)
        tables = _tables(number)
        try:
            self._write_version(conn, tables, base, sorted(keep), fill, dims)
            count, avg_length = conn.execute(CHUNK_STATS.format(**tables)).fetchone()
            manifest = {**manifest, **added, "chunks": count}
            with conn.transaction():  # the one step that publishes the new version
                conn.execute(INSERT_VERSION, (number, psycopg.types.json.Jsonb(manifest), count, avg_length))
                conn.execute(SWITCH, (number,))
                if closing:
                    conn.execute(closing)
        except Exception as e:  # the server, the network, a full disk, a bad vector: not a traceback
            with contextlib.suppress(psycopg.Error):
                if conn.execute("SELECT 1 FROM current WHERE version = %s", (number,)).fetchone() is None:
                    self._drop_version(conn, number)
            raise RagError(f"could not write the index in {self.where} ({_reason(e)}); "
                           "any previous index is unchanged") from None
        self._drop_old(conn, keep={number, base} if base else {number})
        self._pinned = None
        return added

    def _write_version(self, conn, tables: dict[str, str], base: int | None, keep: list[str],
                       fill: Callable[[object, dict[str, str], int], None], dims: int) -> None:
        """Create and fill a version's tables: kept rows copied inside the database, new ones by fill; then its
        indexes and term statistics."""
        conn.execute(CREATE_ARTICLES.format(**tables))
        conn.execute(CREATE_CHUNKS.format(dims=dims, **tables))
        kept = 0
        if base and keep:
            old = _tables(base)
            conn.execute(COPY_KEPT_ARTICLES.format(old=old["articles"], **tables), (keep,))
            kept = conn.execute(COPY_KEPT_CHUNKS.format(old=old["chunks"], **tables), (keep,)).rowcount
        fill(conn, tables, kept)
        conn.execute(INDEX_CHUNKS.format(**tables))
        if dims <= HNSW_MAX_DIMS:
            conn.execute(INDEX_HNSW.format(**tables, **self.hnsw))
        conn.execute(CREATE_TERMS.format(**tables))

    @staticmethod
    def _copy_new(conn, tables: dict[str, str], kept: int, articles: list[Article], chunks: list[Chunk],
                  vectors: np.ndarray) -> None:
        """The new articles and chunks sent by COPY, numbered after the kept chunks."""
        _copy_rows(conn, tables["articles"], ARTICLE_COLUMNS, (article_fields(a) for a in articles))
        _copy_rows(conn, tables["chunks"], CHUNK_COLUMNS, (chunk_fields(seq, chunk, vector) for seq, (chunk, vector)
                                                           in enumerate(zip(chunks, vectors, strict=True), start=kept)))

    @staticmethod
    def _copy_staged(conn, tables: dict[str, str], kept: int) -> None:
        """A shared build's articles and staged chunks, numbered after the kept chunks in the order of its queue."""
        conn.execute(COPY_STAGED_ARTICLES.format(**tables))
        conn.execute(COPY_STAGED_CHUNKS.format(**tables), (kept,))

    # A build shared by several `rag index` runs (setting index_batch), each in `building(shared=True)`.

    @contextlib.contextmanager
    def _queue_lock(self, conn) -> Iterator[None]:
        """Held while a builder prepares the schema, or a worker opens or publishes the shared build: one at a
        time."""
        psycopg = _psycopg()
        try:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (QUEUE_LOCK_CLASS, self.schema))
        except psycopg.Error as e:
            raise self._fail(e, "to take the queue lock") from None
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # a broken connection has released it already
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (QUEUE_LOCK_CLASS, self.schema))

    def _open_build(self, conn) -> tuple | None:
        """(build, plan, base version, kept article ids) of the open shared build; None if none is open."""
        if conn.execute(BUILD_OPEN, (self.schema,)).fetchone() is None:
            return None
        return conn.execute(READ_BUILD).fetchone()

    def open_or_join(self, make: Callable[[], tuple[dict, set[str], list[Article]]]) -> dict:
        """The plan of the open shared build, which this worker joins; if none is open, it opens one from make():
        a plan kept for every worker, the ids of the published articles to keep and the articles to embed."""
        psycopg = _psycopg()
        conn = self._writer
        try:
            with self._queue_lock(conn):
                row = self._open_build(conn)
                if row is None:
                    plan, keep, articles = make()
                    base = self._pinned.number if keep else None  # the version make() read the kept articles in
                    row = (uuid.uuid4(), plan)
                    with conn.transaction():
                        conn.execute(CREATE_BUILD)
                        conn.execute(INSERT_BUILD, (row[0], psycopg.types.json.Jsonb(plan), base, sorted(keep)))
                        _copy_rows(conn, "build_queue", f"position, {ARTICLE_COLUMNS}",
                                   ([_int(position), *article_fields(a)] for position, a in enumerate(articles)))
        except psycopg.Error as e:
            raise self._fail(e, "to open the shared build") from None
        self._build = row[0]
        return row[1]

    def work(self, batch: int, embed: Callable[[list[Article]], tuple[list[Chunk], np.ndarray]]) -> None:
        """Embed the shared build's articles with the other workers until every one is in: claim up to `batch` that
        no one holds, stage the chunks and vectors embed(them) returns and mark them done, all in the claim's
        transaction (a worker that dies mid-way rolls it back: the server frees its articles). When the others hold
        every unfinished article, wait for them, to take over those of a worker that dies."""
        psycopg = _psycopg()
        conn, build = self._writer, {"build": self._build}
        try:
            while True:
                with conn.transaction():
                    claimed = conn.execute(CLAIM, {**build, "n": batch}).fetchall()
                    if claimed:
                        chunks, vectors = embed([Article(*row[1:]) for row in claimed])
                        self._stage(conn, {row[1]: row[0] for row in claimed}, chunks, vectors)
                if not claimed and conn.execute(WAIT, build).fetchone() is None:
                    return
        except psycopg.errors.UndefinedTable:
            return  # the build's tables are gone: another worker has published it
        except psycopg.Error as e:
            raise self._fail(e, "to embed its share of the build") from None

    @staticmethod
    def _stage(conn, positions: dict[str, int], chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Stage a claim's chunks (each with its article's position) and mark its articles done."""
        _copy_rows(conn, "build_chunks", f"position, {CHUNK_COLUMNS}",
                   ([_int(positions[chunk.article_id]), *chunk_fields(seq, chunk, vector)]
                    for seq, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))))
        conn.execute(MARK_DONE, (list(positions.values()),))

    def finish(self, manifest_of: Callable[[dict[str, dict]], dict]) -> bool:
        """Publish the shared build, once every article is in, unless another worker did; whether this one did.
        manifest_of(entries) is the new version's manifest, given its embedded articles' manifest entries."""
        psycopg = _psycopg()
        conn = self._writer
        try:
            with self._queue_lock(conn):
                row = self._open_build(conn)
                if row is None or row[0] != self._build:
                    return False
                _, _, base, keep = row
                entries = {id_: {"sha256": sha256, "title": title, "date": date, "format": format_, "chunks": chunks}
                           for id_, sha256, title, date, format_, chunks in conn.execute(STAGED_ENTRIES)}
                self._drop_leftovers(conn, builds=False)  # of a publisher killed mid-way
                self._publish(conn, manifest_of(entries), set(keep), base, self._copy_staged, closing=DROP_BUILD)
        except psycopg.Error as e:
            raise self._fail(e, "to publish the shared build") from None
        return True

    @staticmethod
    def _drop_version(conn, number: int) -> None:
        conn.execute(DROP_TABLES.format(**_tables(number)))
        conn.execute(FORGET_VERSION, (number,))

    def _drop_old(self, conn, keep: set[int]) -> None:
        """Drop versions other than the new and the previous one; one a reader is using waits for the next build."""
        psycopg = _psycopg()
        for number in sorted(self._versions(conn) | self._own_versions(conn)):
            if number not in keep:
                with contextlib.suppress(psycopg.Error), conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '2s'")
                    self._drop_version(conn, number)

