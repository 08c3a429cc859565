/* requests.c: the table of outgoing requests in flight, on a fake link. */
#include "swarm_fakes.h"

#include "requests.h"

static fake_net net;
static swd_link link_;
static fake_id self;

static void setup_link(void)
{
    fake_id_make(&self);
    fake_link(&link_, &net, &self);
}

static swd_msg get_updates(uint8_t origin_byte)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_UPDATES;
    m.u.get_updates.origin[0] = origin_byte;
    m.u.get_updates.max_steps = 10;
    return m;
}

/* A request goes out sealed, with the timeout of its kind, and its reply
 * takes it off the table exactly once. */
static void test_send_and_take(void **state)
{
    (void)state;
    setup_link();
    swd_requests t;
    memset(&t, 0, sizeof t);
    uint8_t origin[SW_ID_BYTES] = {7}, peer[SW_ID_BYTES] = {9};
    swd_msg m = get_updates(7);
    swd_req *r = swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m, origin, peer);
    assert_non_null(r);
    assert_int_equal(net.n_sent, 1);
    assert_string_equal(net.sent[0].addr, "tcp://a:1");
    assert_int_equal(net.sent[0].timeout_ms, SWD_REQUESTS_AE_TIMEOUT_MS);
    swd_msg got;
    fake_open(&net.sent[0], &got);
    assert_int_equal(got.type, SWD_MSG_GET_UPDATES);
    assert_memory_equal(got.sender, self.pk, SW_ID_BYTES);
    swd_msg_fini(&got);
    assert_true(swd_requests_pending_origin(&t, origin));
    assert_int_equal(swd_requests_in_flight(&t), 1);

    swd_msg h;
    memset(&h, 0, sizeof h);
    h.type = SWD_MSG_HELLO;
    h.context = SWD_CTX_JOIN;
    assert_non_null(swd_requests_send(&t, &link_, SWD_REQ_HELLO, "tcp://b:2", &h, NULL, NULL));
    assert_int_equal(net.sent[1].timeout_ms, SWD_REQUESTS_HELLO_TIMEOUT_MS);

    swd_req out;
    assert_false(swd_requests_take(&t, 12345, &out)); /* nobody asked */
    assert_true(swd_requests_take(&t, net.sent[0].id, &out));
    assert_int_equal(out.kind, SWD_REQ_GET_UPDATES);
    assert_memory_equal(out.origin, origin, SW_ID_BYTES);
    assert_memory_equal(out.peer, peer, SW_ID_BYTES);
    assert_false(swd_requests_take(&t, net.sent[0].id, &out)); /* a second reply: unknown */
    assert_false(swd_requests_pending_origin(&t, origin));
    assert_int_equal(swd_requests_in_flight(&t), 1);
    fake_net_clear(&net);
}

/* The table is bounded: the 65th request is refused and nothing is sent. */
static void test_full_table(void **state)
{
    (void)state;
    setup_link();
    swd_requests t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < SWD_REQUESTS_MAX; i++) {
        swd_msg m = get_updates((uint8_t)i);
        assert_non_null(swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m,
                                          m.u.get_updates.origin, NULL));
    }
    swd_msg m = get_updates(200);
    assert_null(swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m, NULL, NULL));
    assert_int_equal(net.n_sent, SWD_REQUESTS_MAX);
    swd_req out;
    assert_true(swd_requests_take(&t, net.sent[5].id, &out));
    assert_non_null(
        swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m, NULL, NULL));
    fake_net_clear(&net);
}

/* A request the socket refuses takes no slot. */
static void test_send_failure(void **state)
{
    (void)state;
    setup_link();
    swd_requests t;
    memset(&t, 0, sizeof t);
    net.fail_requests = SW_EIO;
    swd_msg m = get_updates(1);
    assert_null(swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m,
                                  m.u.get_updates.origin, NULL));
    assert_int_equal(swd_requests_in_flight(&t), 0);
    assert_false(swd_requests_pending_origin(&t, m.u.get_updates.origin));
}

/* A reply that never comes: the slot is reclaimed after the backstop, not before. */
static void test_expire(void **state)
{
    (void)state;
    setup_link();
    swd_requests t;
    memset(&t, 0, sizeof t);
    swd_msg m = get_updates(1);
    assert_non_null(swd_requests_send(&t, &link_, SWD_REQ_GET_UPDATES, "tcp://a:1", &m,
                                      m.u.get_updates.origin, NULL));
    uint64_t backstop = 2 * (uint64_t)SWD_REQUESTS_AE_TIMEOUT_MS + 1000;
    assert_int_equal(swd_requests_expire(&t, net.now_ms + backstop), 0);
    assert_int_equal(swd_requests_in_flight(&t), 1);
    assert_int_equal(swd_requests_expire(&t, net.now_ms + backstop + 1), 1);
    assert_int_equal(swd_requests_in_flight(&t), 0);
    fake_net_clear(&net);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_and_take),
        cmocka_unit_test(test_full_table),
        cmocka_unit_test(test_send_failure),
        cmocka_unit_test(test_expire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
