"""Interop (d): the PyTorch 2.x dialect as golden frames over raw sockets against gpurun-store.

The request bytes are what a 2.x client (torch/csrc/distributed/c10d/TCPStore.cpp, 2.5+) writes,
and the expected replies are what the 2.x libuv server sends (rendezvous/PROTOCOL.md, §"2.x"):
2.x numbering (VALIDATE=0 ... QUEUE_LEN=0x10), VALIDATE magic CE F7 85 3C, PING echo,
CANCEL_WAIT, APPEND, MULTI_GET/MULTI_SET, queues. Also: a wrong magic closes the connection, and
1.13 and 2.x connections share one key space.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storelib  # noqa: E402
from storelib import (MAGIC_BYTES, NOT_READY, READY, STOP_WAITING, V2, V113, WAIT_CANCELED,  # noqa: E402
                      i64, keys, s, u8, u32, u64, validate)


def op(code, *fields):
    return u8(code) + b"".join(fields)


def H(text):
    """Bytes from a hex dump with spaces, e.g. H("01 03 00")."""
    return bytes.fromhex(text.replace(" ", ""))


@unittest.skipIf(storelib.REFERENCE, "torch 1.13's server speaks only the 1.13 dialect")
class V2FramesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = storelib.Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def tearDown(self):
        self.assertTrue(self.server.alive(), "store server died")

    def conn(self, validated=True):
        c = storelib.RawConn(self.server.host, self.server.port)
        self.addCleanup(c.close)
        if validated:
            c.send(validate())
        return c

    def conn113(self):
        c = storelib.RawConn(self.server.host, self.server.port)
        self.addCleanup(c.close)
        return c

    # ---- handshake ----------------------------------------------------------------------------

    def test_golden_handshake(self):
        c = self.conn(validated=False)
        c.send(H("00 CE F7 85 3C"))  # VALIDATE: no reply
        self.assertTrue(c.nothing_pending())
        c.send(H("0D 78 56 34 12"))  # PING nonce 0x12345678
        self.assertEqual(c.recv_exact(4), H("78 56 34 12"))

    def test_handshake_split_into_single_bytes(self):
        c = self.conn(validated=False)
        for b in validate() + op(V2.PING, u32(0xDEADBEEF)):
            c.send(bytes([b]))
        self.assertEqual(c.recv_exact(4), u32(0xDEADBEEF))

    def test_client_init_sequence_pipelined(self):
        # What a 2.5+ client with world_size sends on connect: VALIDATE, PING, ADD "init/" 1.
        # (Each is its own write upstream; here all three arrive in one segment.)
        c = self.conn(validated=False)
        c.send(validate() + op(V2.PING, u32(4242)) + op(V2.ADD, s("hs/init/"), i64(1)))
        self.assertEqual(c.recv_exact(4), u32(4242))
        self.assertEqual(c.recv_exact(8), i64(1))

    def test_wrong_magic_closes_connection(self):
        c = self.conn(validated=False)
        c.send(H("00 DE AD BE EF") + op(V2.PING, u32(1)))
        self.assertTrue(c.closed_by_peer(), "connection with a bad magic stayed open")
        # ... and only that connection: others carry on.
        d = self.conn()
        d.send(op(V2.PING, u32(7)))
        self.assertEqual(d.recv_exact(4), u32(7))

    def test_unknown_query_type_closes_only_that_connection(self):
        c = self.conn()
        c.send(op(V2.SET, s("/unk/k"), s("v")))
        c.send(u8(0x7F))
        self.assertTrue(c.closed_by_peer())
        d = self.conn()
        d.send(op(V2.GET, s("/unk/k")))
        self.assertEqual(d.recv_exact(9), s("v"))  # what came before the bad byte was applied

    def test_idle_connection_does_not_block_others(self):
        self.conn(validated=False)  # like 1.13's idle watch socket: never sends a byte
        d = self.conn()
        d.send(op(V2.PING, u32(99)))
        self.assertEqual(d.recv_exact(4), u32(99))

    # ---- commands with 2.x numbering ------------------------------------------------------------

    def test_golden_set_get(self):
        c = self.conn()
        c.send(H("01 03 00 00 00 00 00 00 00 2f 6b 31 02 00 00 00 00 00 00 00 76 31"))  # SET /k1 v1
        c.send(H("03 03 00 00 00 00 00 00 00 2f 6b 31"))  # GET /k1
        self.assertEqual(c.recv_exact(10), H("02 00 00 00 00 00 00 00 76 31"))
        self.assertTrue(c.nothing_pending())

    def test_set_then_get_in_one_segment_and_binary_value(self):
        c = self.conn()
        value = bytes(range(256)) * 3
        c.send(op(V2.SET, s("/bin"), s(value)) + op(V2.GET, s("/bin")))
        self.assertEqual(c.recv_exact(8 + len(value)), s(value))

    def test_get_missing_key_replies_empty_and_connection_survives(self):
        c = self.conn()
        c.send(op(V2.GET, s("/gm/missing")))
        self.assertEqual(c.recv_exact(8), u64(0))
        c.send(op(V2.PING, u32(5)))
        self.assertEqual(c.recv_exact(4), u32(5))

    def test_add(self):
        c = self.conn()
        c.send(op(V2.ADD, s("/add/c"), i64(5)))
        self.assertEqual(c.recv_exact(8), i64(5))
        c.send(H("04 06 00 00 00 00 00 00 00 2f 61 64 64 2f 63 fe ff ff ff ff ff ff ff"))  # ADD -2
        self.assertEqual(c.recv_exact(8), i64(3))
        c.send(op(V2.GET, s("/add/c")))
        self.assertEqual(c.recv_exact(9), s("3"))

    def test_compare_set_four_cases(self):
        c = self.conn()
        cases = [  # (expected, desired, reply)
            ("", "x", "x"),      # absent, expected empty: store desired
            ("x", "y", "y"),     # present, equal: store desired
            ("zzz", "q", "y"),   # present, different: no change, current value
        ]
        for exp, des, rep in cases:
            c.send(op(V2.COMPARE_SET, s("/cs/k"), s(exp), s(des)))
            self.assertEqual(c.recv_exact(8 + len(rep)), s(rep), (exp, des))
        c.send(op(V2.COMPARE_SET, s("/cs/absent"), s("e"), s("d")))  # absent, expected non-empty
        self.assertEqual(c.recv_exact(9), s("e"))
        c.send(op(V2.CHECK, keys("/cs/absent")))
        self.assertEqual(c.recv_exact(1), NOT_READY)

    def test_check(self):
        c = self.conn()
        c.send(op(V2.SET, s("/chk/a"), s("")))
        c.send(op(V2.CHECK, keys()))
        self.assertEqual(c.recv_exact(1), READY)
        c.send(op(V2.CHECK, keys("/chk/a")))
        self.assertEqual(c.recv_exact(1), READY)
        c.send(op(V2.CHECK, keys("/chk/a", "/chk/b")))
        self.assertEqual(c.recv_exact(1), NOT_READY)

    def test_wait_immediate_and_woken(self):
        c, setter = self.conn(), self.conn()
        c.send(op(V2.SET, s("/w/have"), s("1")) + op(V2.WAIT, keys("/w/have")))
        self.assertEqual(c.recv_exact(1), STOP_WAITING)
        c.send(op(V2.WAIT, keys()))
        self.assertEqual(c.recv_exact(1), STOP_WAITING)
        c.send(op(V2.WAIT, keys("/w/x", "/w/y", "/w/x")))
        c.send(op(V2.CHECK, keys("/w/x")))
        self.assertEqual(c.recv_exact(1), NOT_READY)  # served while the WAIT is outstanding
        setter.send(op(V2.SET, s("/w/x"), s("1")))
        setter.send(op(V2.PING, u32(1)))
        self.assertEqual(setter.recv_exact(4), u32(1))  # the SET has been applied
        self.assertTrue(c.nothing_pending())
        setter.send(op(V2.ADD, s("/w/y"), i64(1)))  # ADD wakes too
        self.assertEqual(setter.recv_exact(8), i64(1))
        self.assertEqual(c.recv_exact(1), STOP_WAITING)
        self.assertTrue(c.nothing_pending())  # one reply, even with a duplicate key

    def test_cancel_wait(self):
        c, setter = self.conn(), self.conn()
        c.send(op(V2.WAIT, keys("/cw/k")))
        c.send(op(V2.CANCEL_WAIT))
        self.assertEqual(c.recv_exact(1), WAIT_CANCELED)
        setter.send(op(V2.SET, s("/cw/k"), s("v")) + op(V2.PING, u32(2)))
        self.assertEqual(setter.recv_exact(4), u32(2))
        c.send(op(V2.PING, u32(3)))
        self.assertEqual(c.recv_exact(4), u32(3))  # no stray STOP_WAITING before the echo

    def test_append(self):
        c, w = self.conn(), self.conn()
        w.send(op(V2.WAIT, keys("/app/k")))
        w.send(op(V2.CHECK, keys("/app/k")))
        self.assertEqual(w.recv_exact(1), NOT_READY)
        c.send(op(V2.APPEND, s("/app/k"), s("ab")) + op(V2.APPEND, s("/app/k"), s("cd")))
        self.assertEqual(w.recv_exact(1), STOP_WAITING)  # APPEND creating the key wakes
        c.send(op(V2.GET, s("/app/k")))
        self.assertEqual(c.recv_exact(12), s("abcd"))

    def test_multi_set_multi_get(self):
        c = self.conn()
        # MULTI_SET's count is written as an int64 by the client: same bytes as u64.
        c.send(op(V2.MULTI_SET, i64(2), s("/m/1"), s("one"), s("/m/2"), s(b"\x00two")))
        c.send(op(V2.MULTI_GET, keys("/m/2", "/m/1", "/m/missing")))
        self.assertEqual(c.recv_exact(12 + 11 + 8), s(b"\x00two") + s("one") + s(""))

    def test_delete_key_and_num_keys(self):
        c = self.conn()
        c.send(op(V2.GETNUMKEYS))
        before = int.from_bytes(c.recv_exact(8), "little", signed=True)
        c.send(op(V2.SET, s("/dk/k"), s("v")) + op(V2.GETNUMKEYS))
        self.assertEqual(c.recv_exact(8), i64(before + 1))
        c.send(op(V2.QUEUE_PUSH, s("/dk/q"), s("x")) + op(V2.GETNUMKEYS))
        self.assertEqual(c.recv_exact(8), i64(before + 1))  # queues are not keys
        c.send(op(V2.DELETE_KEY, s("/dk/k")))
        self.assertEqual(c.recv_exact(8), i64(1))
        c.send(op(V2.DELETE_KEY, s("/dk/k")))
        self.assertEqual(c.recv_exact(8), i64(0))
        c.send(op(V2.GETNUMKEYS))
        self.assertEqual(c.recv_exact(8), i64(before))

    def test_queues(self):
        c = self.conn()
        c.send(op(V2.QUEUE_LEN, s("/q/none")))
        self.assertEqual(c.recv_exact(8), i64(0))
        c.send(op(V2.QUEUE_POP, s("/q/none")))
        self.assertEqual(c.recv_exact(8), i64(0))  # empty: the length alone, nothing follows
        self.assertTrue(c.nothing_pending())
        c.send(op(V2.QUEUE_PUSH, s("/q/a"), s("first")) + op(V2.QUEUE_PUSH, s("/q/a"), s("2nd")))
        c.send(op(V2.QUEUE_LEN, s("/q/a")))
        self.assertEqual(c.recv_exact(8), i64(2))
        c.send(op(V2.CHECK, keys("/q/a")))  # a non-empty queue counts as present
        self.assertEqual(c.recv_exact(1), READY)
        c.send(op(V2.QUEUE_POP, s("/q/a")))
        self.assertEqual(c.recv_exact(8 + 13), i64(2) + s("first"))  # length before the pop
        c.send(op(V2.QUEUE_POP, s("/q/a")))
        self.assertEqual(c.recv_exact(8 + 11), i64(1) + s("2nd"))
        c.send(op(V2.QUEUE_LEN, s("/q/a")))
        self.assertEqual(c.recv_exact(8), i64(0))

    def test_queue_push_wakes_one_waiter(self):
        w1, w2, p = self.conn(), self.conn(), self.conn()
        for w in (w1, w2):
            w.send(op(V2.WAIT, keys("/q/wake")) + op(V2.CHECK, keys("/q/never")))
            self.assertEqual(w.recv_exact(1), NOT_READY)  # WAIT registered
        p.send(op(V2.QUEUE_PUSH, s("/q/wake"), s("job1")) + op(V2.PING, u32(8)))
        self.assertEqual(p.recv_exact(4), u32(8))
        woken = [w for w in (w1, w2) if not w.nothing_pending(0.2)]
        self.assertEqual(len(woken), 1, "one QUEUE_PUSH must wake exactly one waiter")
        self.assertEqual(woken[0].recv_exact(1), STOP_WAITING)
        other = w2 if woken[0] is w1 else w1
        p.send(op(V2.QUEUE_PUSH, s("/q/wake"), s("job2")))
        self.assertEqual(other.recv_exact(1), STOP_WAITING)

    # ---- dialects share one key space -----------------------------------------------------------

    def test_v113_and_v2_share_keys(self):
        old, new = self.conn113(), self.conn()
        old.send(bytes([V113.SET]) + s("/mix/a") + s("from113"))
        # A 1.13 SET has no reply: read the key back on the same connection first, so the SET
        # is known to be applied before the other connection's GET (which could overtake it).
        old.send(bytes([V113.GET]) + s("/mix/a"))
        self.assertEqual(old.recv_exact(15), s("from113"))
        new.send(op(V2.GET, s("/mix/a")))
        self.assertEqual(new.recv_exact(15), s("from113"))
        new.send(op(V2.ADD, s("/mix/ctr"), i64(2)))
        self.assertEqual(new.recv_exact(8), i64(2))
        old.send(bytes([V113.ADD]) + s("/mix/ctr") + i64(3))
        self.assertEqual(old.recv_exact(8), i64(5))
        old.send(bytes([V113.WAIT]) + keys("/mix/late"))
        old.send(bytes([V113.CHECK]) + keys("/mix/late"))
        self.assertEqual(old.recv_exact(1), NOT_READY)
        new.send(op(V2.SET, s("/mix/late"), s("x")))
        self.assertEqual(old.recv_exact(1), STOP_WAITING)  # a 2.x SET wakes a 1.13 WAIT
        old.send(bytes([V113.GETNUMKEYS]))
        new.send(op(V2.GETNUMKEYS))
        self.assertEqual(old.recv_exact(8), new.recv_exact(8))

    def test_v113_first_byte_zero_is_a_set(self):
        # A 1.13 connection whose first request is SET (type 0) must not be taken for VALIDATE.
        old = self.conn113()
        old.send(bytes([V113.SET]) + s("/z/k") + s("v") + bytes([V113.GET]) + s("/z/k"))
        self.assertEqual(old.recv_exact(9), s("v"))

    def test_magic_constant(self):
        self.assertEqual(MAGIC_BYTES, H("CE F7 85 3C"))


if __name__ == "__main__":
    storelib.testlib.main()
