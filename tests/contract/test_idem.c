/*
 * test_idem.c - idempotency records, on the store named by
 * STRATUS_TEST_STORE (contract/support/store_fixture.h), through the
 * repository interface only; begin also against another process with a
 * store of its own on the same database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract/support/contract.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OWNER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define HASH_1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH_2 "2222222222222222222222222222222222222222222222222222222222222222"

/* The race: keys two processes both begin. */
#define RACE_KEYS 50

static void
test_idem__new_in_progress_done(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct idem_record rec = {0};
    enum idem_begin_result res = IDEM_DONE;

    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "key-1", HASH_1, 1000, 90000, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_NEW);
    assert_null(rec.body);

    /* A retry while the first is being served; the same key of another owner is another key. */
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "key-1", HASH_1, 1100, 90100, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_IN_PROGRESS);
    /* Said with when it began, so an abandoned one can be told apart. */
    assert_int_equal(rec.created_at, 1000);
    idem_record_release(&rec);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_B, "key-1", HASH_2, 1100, 90100, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_NEW);

    assert_st_ok(idem_repo_finish(&fx->store.idem, OWNER_A, "key-1", 202, "{\"id\":\"x\"}",
                                  "/v1/operations/x", &err),
                 err);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "key-1", HASH_1, 1200, 90200, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_DONE);
    assert_int_equal(rec.status, 202);
    assert_string_equal(rec.body, "{\"id\":\"x\"}");
    assert_string_equal(rec.location, "/v1/operations/x");
    assert_string_equal(rec.owner_id, OWNER_A);
    assert_string_equal(rec.key, "key-1");
    assert_string_equal(rec.request_hash, HASH_1);
    assert_int_equal(rec.created_at, 1000);
    assert_int_equal(rec.expires_at, 90000);
    idem_record_release(&rec);
    assert_null(rec.body);

    /* The same key with another request, before and after it is done. */
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "key-1", HASH_2, 1300, 90300, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_MISMATCH);
    assert_string_equal(rec.request_hash, HASH_1);
    assert_int_equal(rec.status, 202);
    idem_record_release(&rec);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_B, "key-1", HASH_1, 1300, 90300, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_MISMATCH);
    assert_int_equal(rec.status, 0);
    idem_record_release(&rec);

    /* No body and no Location are stored as none. */
    assert_st_ok(idem_repo_finish(&fx->store.idem, OWNER_B, "key-1", 204, NULL, NULL, &err), err);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_B, "key-1", HASH_2, 1400, 90400, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_DONE);
    assert_int_equal(rec.status, 204);
    assert_null(rec.body);
    assert_null(rec.location);
    idem_record_release(&rec);

    assert_st_err(idem_repo_finish(&fx->store.idem, OWNER_A, "key-2", 200, NULL, NULL, &err), err,
                  ST_ERR_NOT_FOUND, "no idempotency key 'key-2'");
    assert_st_err(idem_repo_finish(&fx->store.idem, OWNER_A, "key-1", 0, NULL, NULL, &err), err,
                  ST_ERR_INVALID, "status > 0");
    assert_st_err(
        idem_repo_begin(&fx->store.idem, OWNER_A, "bad key", HASH_1, 1, 2, &res, &rec, &err), err,
        ST_ERR_INVALID, "idempotency key 'bad key'");
    assert_st_err(idem_repo_begin(&fx->store.idem, OWNER_A, "key-3", "", 1, 2, &res, &rec, &err),
                  err, ST_ERR_INVALID, "request hash");
}

static void
test_idem__expired_forgotten_pruned(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct idem_record rec = {0};
    enum idem_begin_result res = IDEM_DONE;
    size_t n = 0;

    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "k", HASH_1, 1000, 2000, &res, &rec, &err), err);
    assert_st_ok(idem_repo_finish(&fx->store.idem, OWNER_A, "k", 201, "{}", "/x", &err), err);

    /* At its expiry it still answers; after, it is begun anew, whatever the hash. */
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "k", HASH_1, 2000, 3000, &res, &rec, &err), err);
    assert_int_equal(res, IDEM_DONE);
    idem_record_release(&rec);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "k", HASH_2, 2001, 5000, &res, &rec, &err), err);
    assert_int_equal(res, IDEM_NEW);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM idempotency_keys WHERE status = 0 AND "
                                      "body IS NULL AND location IS NULL AND created_at = 2001 "
                                      "AND expires_at = 5000"),
                     1);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "k", HASH_2, 2002, 5000, &res, &rec, &err), err);
    assert_int_equal(res, IDEM_IN_PROGRESS);

    /* Forgotten (after a 5xx), the retry runs again; forgetting twice is no error. */
    assert_st_ok(idem_repo_forget(&fx->store.idem, OWNER_A, "k", &err), err);
    assert_st_ok(idem_repo_forget(&fx->store.idem, OWNER_A, "k", &err), err);
    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_A, "k", HASH_2, 2003, 5000, &res, &rec, &err), err);
    assert_int_equal(res, IDEM_NEW);

    assert_st_ok(
        idem_repo_begin(&fx->store.idem, OWNER_B, "k", HASH_2, 2003, 4000, &res, &rec, &err), err);
    assert_st_ok(idem_repo_prune(&fx->store.idem, 4000, &n, &err), err);
    assert_int_equal(n, 0);
    assert_st_ok(idem_repo_prune(&fx->store.idem, 4001, &n, &err), err);
    assert_int_equal(n, 1);
    assert_int_equal(
        contract_int(fx, "SELECT count(*) FROM idempotency_keys WHERE owner_id = '" OWNER_A "'"),
        1);
}

/* One process of the idempotency race: begin every key once; exit status is how many were new. */
static int
idem_racer(const char *url, int gate)
{
    struct st_error err = {0};
    struct idem_record rec = {0};
    enum idem_begin_result res;
    struct store store;
    char key[32];
    int fresh = 0;
    char c;
    int i;

    if (read(gate, &c, 1) < 0)
        return 255;
    if (store_open(&store, url, &err) < 0) {
        fprintf(stderr, "racer: open: %s\n", err.msg);
        return 255;
    }
    for (i = 0; i < RACE_KEYS && fresh >= 0; i++) {
        snprintf(key, sizeof(key), "race-%d", i);
        if (idem_repo_begin(&store.idem, OWNER_A, key, HASH_1, st_now_ms(), st_now_ms() + 60000,
                            &res, &rec, &err) < 0) {
            fprintf(stderr, "racer: %s: %s\n", st_err_code_name(err.code), err.msg);
            fresh = -1;
        } else if (res == IDEM_NEW) {
            fresh++;
        } else if (res != IDEM_IN_PROGRESS) {
            fprintf(stderr, "racer: key '%s' answered %d\n", key, (int)res);
            fresh = -1;
        }
    }
    store_close(&store);
    return fresh < 0 ? 255 : fresh;
}

/*
 * Two processes begin the same keys at once.  Each key is new to at least
 * one of them (someone made the record), so RACE_KEYS new ones in total
 * means exactly one each.
 */
static void
test_idem__race_has_one_winner(void **state)
{
    struct store_fixture *fx = *state;
    pid_t pids[2];
    int gate[2];
    int status;
    int total = 0;
    size_t i;

    assert_int_equal(pipe(gate), 0);
    for (i = 0; i < ST_ARRAY_LEN(pids); i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(idem_racer(store_fixture_url(fx), gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (i = 0; i < ST_ARRAY_LEN(pids); i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_not_equal(WEXITSTATUS(status), 255);
        total += WEXITSTATUS(status);
    }
    assert_int_equal(total, RACE_KEYS);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM idempotency_keys"), RACE_KEYS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_idem__new_in_progress_done),
        CONTRACT_TEST(test_idem__expired_forgotten_pruned),
        CONTRACT_TEST(test_idem__race_has_one_winner),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
