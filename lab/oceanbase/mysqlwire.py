# The MySQL client/server protocol, server side, as the OceanBase double's observers speak it
# (lab/oceanbase/README.md): handshake v10 with mysql_native_password, COM_QUERY with text
# result sets, COM_STMT_PREPARE/EXECUTE/CLOSE with binary result sets, COM_PING, COM_INIT_DB,
# COM_QUIT. Written from the protocol documentation; it knows nothing of OceanBase: a handler
# object answers each statement with rows, an OK or an error.
import hashlib
import os
import struct

CAPS = (0x1 | 0x2 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x40000 | 0x80000)
LONGLONG, DOUBLE, VAR_STRING, NULL_TYPE = 0x08, 0x05, 0xFD, 0x06


class SqlError(Exception):
    """An error the server sends: MySQL error code, SQLSTATE and message."""

    def __init__(self, code, message, state="HY000"):
        super().__init__(message)
        self.code, self.message, self.state = code, message, state


class Result:
    """Rows for a result set (`columns` non-empty) or an OK with `affected`."""

    def __init__(self, columns=(), rows=(), affected=0):
        self.columns, self.rows, self.affected = list(columns), [list(r) for r in rows], affected


def lenenc_int(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b):
    if isinstance(b, str):
        b = b.encode()
    return lenenc_int(len(b)) + b


def read_lenenc_int(buf, i):
    c = buf[i]
    if c < 251:
        return c, i + 1
    if c == 0xFC:
        return struct.unpack_from("<H", buf, i + 1)[0], i + 3
    if c == 0xFD:
        return int.from_bytes(buf[i + 1:i + 4], "little"), i + 4
    return struct.unpack_from("<Q", buf, i + 1)[0], i + 9


def native_token(password, salt):
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode()).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(salt + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


class Session:
    """One client connection. `handler(sql, params)` returns a Result or raises SqlError;
    `users` maps user name to password (None: any password)."""

    def __init__(self, sock, handler, users, version):
        self.sock, self.handler, self.users, self.version = sock, handler, users, version
        self.seq = 0
        self.stmts = {}
        self.next_stmt = 1

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("client went away")
            out += chunk
        return out

    def read_packet(self):
        head = self.recv_exact(4)
        n = int.from_bytes(head[:3], "little")
        self.seq = (head[3] + 1) & 0xFF
        return self.recv_exact(n)

    def send(self, payload):
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF

    def ok(self, affected=0):
        self.send(b"\x00" + lenenc_int(affected) + lenenc_int(0) + struct.pack("<HH", 2, 0))

    def eof(self):
        self.send(b"\xfe" + struct.pack("<HH", 0, 2))

    def error(self, e):
        self.send(b"\xff" + struct.pack("<H", e.code) + b"#" + e.state.encode()[:5] + e.message.encode())

    def column_def(self, name, typ):
        charset, length = (63, 20) if typ == LONGLONG else (33, 1 << 20)
        return (lenenc_str("def") + lenenc_str("oceanbase") + lenenc_str("") + lenenc_str("")
                + lenenc_str(name) + lenenc_str(name) + b"\x0c" + struct.pack("<HIBHB", charset, length, typ, 0, 0)
                + b"\x00\x00")

    def serve(self):
        salt = os.urandom(20).replace(b"\x00", b"\x01")
        self.seq = 0
        self.send(b"\x0a" + self.version.encode() + b"\x00" + struct.pack("<I", os.getpid() & 0xFFFFFFF)
                  + salt[:8] + b"\x00" + struct.pack("<H", CAPS & 0xFFFF) + bytes([33])
                  + struct.pack("<H", 2) + struct.pack("<H", CAPS >> 16) + bytes([21]) + b"\x00" * 10
                  + salt[8:] + b"\x00" + b"mysql_native_password\x00")
        resp = self.read_packet()
        caps = struct.unpack_from("<I", resp, 0)[0]
        i = 32
        end = resp.index(b"\x00", i)
        user = resp[i:end].decode()
        i = end + 1
        if caps & 0x200000:
            n, i = read_lenenc_int(resp, i)
        elif caps & 0x8000:
            n, i = resp[i], i + 1
        else:
            n = resp.index(b"\x00", i) - i
        token = resp[i:i + n]
        # "root@sys" and "root@sys#cluster" are how OceanBase's users log in through obproxy.
        name = user.split("@")[0]
        if name not in self.users or (self.users[name] is not None
                                       and token != native_token(self.users[name], salt)):
            self.error(SqlError(1045, "Access denied for user '%s'" % user, "28000"))
            return
        self.ok()
        while True:
            try:
                pkt = self.read_packet()
            except (ConnectionError, OSError):
                return
            cmd, body = pkt[0], pkt[1:]
            if cmd == 0x01:
                return
            if cmd in (0x0E, 0x02, 0x1A):
                self.ok()
            elif cmd == 0x03:
                self.run(body.decode("utf-8", "replace"), [], binary=False)
            elif cmd == 0x16:
                self.prepare(body.decode("utf-8", "replace"))
            elif cmd == 0x17:
                self.execute(body)
            elif cmd == 0x19:
                self.stmts.pop(struct.unpack_from("<I", body, 0)[0], None)
            else:
                self.error(SqlError(1047, "Unknown command %d" % cmd, "08S01"))

    def prepare(self, sql):
        sid = self.next_stmt
        self.next_stmt += 1
        n = count_placeholders(sql)
        self.stmts[sid] = {"sql": sql, "n": n, "types": None}
        self.send(b"\x00" + struct.pack("<IHHBH", sid, 0, n, 0, 0))
        if n:
            for _ in range(n):
                self.send(self.column_def("?", VAR_STRING))
            self.eof()

    def execute(self, body):
        sid = struct.unpack_from("<I", body, 0)[0]
        st = self.stmts.get(sid)
        if st is None:
            self.error(SqlError(1243, "Unknown prepared statement handler"))
            return
        n, i, params = st["n"], 9, []
        if n:
            nulls = body[i:i + (n + 7) // 8]
            i += (n + 7) // 8
            bound = body[i]
            i += 1
            if bound:
                st["types"] = [struct.unpack_from("<BB", body, i + 2 * k) for k in range(n)]
                i += 2 * n
            for k in range(n):
                if nulls[k // 8] & (1 << (k % 8)):
                    params.append(None)
                    continue
                typ, flag = st["types"][k]
                v, i = read_binary_value(body, i, typ, flag & 0x80)
                params.append(v)
        self.run(st["sql"], params, binary=True)

    def run(self, sql, params, binary):
        try:
            res = self.handler(sql, params)
        except SqlError as e:
            self.error(e)
            return
        if not res.columns:
            self.ok(res.affected)
            return
        types = []
        for c in range(len(res.columns)):
            vals = [r[c] for r in res.rows if r[c] is not None]
            types.append(LONGLONG if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
                         else VAR_STRING)
        self.send(lenenc_int(len(res.columns)))
        for name, typ in zip(res.columns, types):
            self.send(self.column_def(name, typ))
        self.eof()
        for row in res.rows:
            if binary:
                bitmap = bytearray((len(row) + 9) // 8)
                vals = b""
                for c, v in enumerate(row):
                    if v is None:
                        bitmap[(c + 2) // 8] |= 1 << ((c + 2) % 8)
                    elif types[c] == LONGLONG:
                        vals += struct.pack("<q", v)
                    else:
                        vals += lenenc_str(text_of(v))
                self.send(b"\x00" + bytes(bitmap) + vals)
            else:
                self.send(b"".join(b"\xfb" if v is None else lenenc_str(text_of(v)) for v in row))
        self.eof()


def text_of(v):
    if isinstance(v, float):
        return repr(v)
    return str(v)


def read_binary_value(buf, i, typ, unsigned):
    if typ == 0x08:
        return struct.unpack_from("<Q" if unsigned else "<q", buf, i)[0], i + 8
    if typ in (0x03, 0x09):
        return struct.unpack_from("<I" if unsigned else "<i", buf, i)[0], i + 4
    if typ in (0x02, 0x0D):
        return struct.unpack_from("<H" if unsigned else "<h", buf, i)[0], i + 2
    if typ == 0x01:
        return struct.unpack_from("<B" if unsigned else "<b", buf, i)[0], i + 1
    if typ == 0x05:
        return struct.unpack_from("<d", buf, i)[0], i + 8
    if typ == 0x04:
        return struct.unpack_from("<f", buf, i)[0], i + 4
    n, i = read_lenenc_int(buf, i)
    return buf[i:i + n].decode("utf-8", "replace"), i + n


def count_placeholders(sql):
    """`?` outside quotes and comments."""
    n, quote, i = 0, None, 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "?":
            n += 1
        i += 1
    return n


def bind(sql, params):
    """The statement with each `?` replaced by its value as a SQL literal."""
    out, quote, k, i = [], None, 0, 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == "\\" and i + 1 < len(sql):
                out.append(sql[i:i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "?" and k < len(params):
            v = params[k]
            k += 1
            if v is None:
                out.append("NULL")
            elif isinstance(v, (int, float)):
                out.append(repr(v))
            else:
                # The statement goes to SQLite, where a backslash is an ordinary character.
                out.append("'" + str(v).replace("'", "''") + "'")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)
