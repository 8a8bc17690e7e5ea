/*
 * The libvirt hypervisor against libvirt's test:///default driver.  The
 * driver keeps one in-process state shared by every connection, so the
 * tests read back what the backend did through a connection of their own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "repositories/libvirt/libvirt_backend.h"
#include "repositories/libvirt/libvirt_internal.h"
#include "support/keeper.h"
#include "support/tmpdir.h"
#include "util/ids.h"
#include "util/mem.h"

#define TEST_URI "test:///default"
#define DEAD_URI "qemu+unix:///system?socket=/nonexistent"
/* The namespace is a stable contract: tooling reads it from live domains. */
#define STRATUS_NS "https://stratus.dev/xmlns/libvirt/domain/1"

struct fixture {
    char dir[64]; /* console log directory */
    struct libvirt_conn *lc;
    struct hypervisor hv;
};

static int
setup(void **state)
{
    struct fixture *f = st_xcalloc(1, sizeof(*f));
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct st_error err;

    if (tmpdir_make(f->dir, sizeof(f->dir), "stratus-hv", &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        free(f);
        return -1;
    }
    cfg.console_dir = f->dir;
    f->lc = libvirt_conn_new(TEST_URI);
    if (hypervisor_libvirt_open(f->lc, &cfg, &f->hv, &err) < 0)
        return -1;
    *state = f;
    return 0;
}

/* Remove every domain a test made (stratus-* and the foreign ones). */
static void
remove_test_domains(void)
{
    virDomainPtr *doms = NULL;
    int i, n;

    n = virConnectListAllDomains(keeper, &doms, 0);
    for (i = 0; i < n; i++) {
        const char *name = virDomainGetName(doms[i]);

        if (strncmp(name, "stratus-", 8) == 0 || strncmp(name, "other-", 6) == 0) {
            if (virDomainIsActive(doms[i]) == 1)
                virDomainDestroy(doms[i]);
            virDomainUndefine(doms[i]);
        }
        virDomainFree(doms[i]);
    }
    free(doms);
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    remove_test_domains();
    hypervisor_close(&f->hv);
    libvirt_conn_close(f->lc);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void
spec_init(struct hv_domain_spec *spec, const char *id)
{
    memset(spec, 0, sizeof(*spec));
    spec->id = id;
    spec->owner_id = "00000000-0000-4000-8000-000000000001";
    spec->name = "web-01";
    spec->vcpus = 2;
    spec->memory_mib = 256;
    spec->disk_path = "/var/lib/stratus/disk.qcow2";
    spec->disk_format = "qcow2";
}

static void
define_new(struct fixture *f, char id[ST_ID_BUF])
{
    struct hv_domain_spec spec;
    struct st_error err;

    st_uuid_generate(id);
    spec_init(&spec, id);
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
}

static void
assert_state(struct fixture *f, const char *id, enum hv_state want)
{
    enum hv_state got = HV_STATE_NOSTATE;
    struct st_error err;

    assert_int_equal(hypervisor_state(&f->hv, id, &got, &err), 0);
    assert_string_equal(hv_state_name(got), hv_state_name(want));
}

static char *
domain_xml(const char *id)
{
    char name[64];
    virDomainPtr dom;
    char *xml;

    snprintf(name, sizeof(name), "stratus-%s", id);
    dom = virDomainLookupByName(keeper, name);
    assert_non_null(dom);
    xml = virDomainGetXMLDesc(dom, 0);
    virDomainFree(dom);
    assert_non_null(xml);
    return xml;
}

static void
test_hypervisor_libvirt__lifecycle(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF];
    struct st_error err;

    define_new(f, id);
    assert_state(f, id, HV_STATE_SHUTOFF);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_RUNNING);
    assert_int_equal(hypervisor_suspend(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_PAUSED);
    assert_int_equal(hypervisor_resume(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_RUNNING);
    assert_int_equal(hypervisor_reboot(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_RUNNING);
    assert_int_equal(hypervisor_shutdown(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_SHUTOFF);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_SHUTOFF);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_state(&f->hv, id, &(enum hv_state){0}, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

static void
test_hypervisor_libvirt__unknown_id_is_not_found(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF];
    enum hv_state st = HV_STATE_RUNNING;
    struct st_error err;

    st_uuid_generate(id);
    assert_int_equal(hypervisor_state(&f->hv, id, &st, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, id));
    assert_int_equal(err.native, VIR_ERR_NO_DOMAIN);
    assert_int_equal(st, HV_STATE_RUNNING); /* untouched on failure */
    assert_int_equal(hypervisor_start(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    /* A domain that is not a stratus one is never reached by id. */
    assert_int_equal(hypervisor_state(&f->hv, "test", &st, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

static void
test_hypervisor_libvirt__wrong_state_is_conflict(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF];
    struct st_error err;

    define_new(f, id);
    assert_int_equal(hypervisor_resume(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(hypervisor_suspend(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(hypervisor_shutdown(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);

    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_resume(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, id));
    assert_int_equal(hypervisor_start(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_state(f, id, HV_STATE_RUNNING); /* still defined and running */
}

/* Position of @id in @ids, or @n when absent. */
static size_t
index_of(char (*ids)[ST_ID_BUF], size_t n, const char *id)
{
    size_t i;

    for (i = 0; i < n && strcmp(ids[i], id) != 0; i++)
        ;
    return i;
}

static void
test_hypervisor_libvirt__list_all_sees_only_stratus_domains(void **state)
{
    struct fixture *f = *state;
    enum { N = 50 };
    char ids[N][ST_ID_BUF];
    enum hv_state want[N];
    bool seen[N] = {false};
    struct hv_domain_info *items = NULL;
    size_t n = 0, i, j;
    virDomainPtr other;
    struct st_error err;

    other = virDomainDefineXML(keeper, "<domain type='test'><name>other-1</name>"
                                       "<memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                                       "</domain>");
    assert_non_null(other);
    virDomainFree(other);
    for (i = 0; i < N; i++) {
        define_new(f, ids[i]);
        want[i] = HV_STATE_SHUTOFF;
        if (i % 3 == 0) {
            assert_int_equal(hypervisor_start(&f->hv, ids[i], &err), 0);
            want[i] = HV_STATE_RUNNING;
        }
        if (i % 6 == 0) {
            assert_int_equal(hypervisor_suspend(&f->hv, ids[i], &err), 0);
            want[i] = HV_STATE_PAUSED;
        }
    }
    assert_int_equal(hypervisor_list_all(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, N);
    for (i = 0; i < n; i++) {
        j = index_of(ids, N, items[i].id);
        assert_true(j < N);
        assert_false(seen[j]);
        seen[j] = true;
        assert_string_equal(hv_state_name(items[i].state), hv_state_name(want[j]));
    }
    free(items);
}

static void
test_hypervisor_libvirt__list_all_empty(void **state)
{
    struct fixture *f = *state;
    struct hv_domain_info *items = NULL;
    size_t n = 99;
    struct st_error err;

    assert_int_equal(hypervisor_list_all(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 0);
    free(items);
}

/* The text of <@what> in the metadata element @xml, unescaped. */
static char *
metadata_text(const char *xml, const char *what)
{
    char open[64], close[64];
    const char *start, *end;
    char *text;

    snprintf(open, sizeof(open), "<%s>", what);
    snprintf(close, sizeof(close), "</%s>", what);
    start = strstr(xml, open);
    assert_non_null(start);
    start += strlen(open);
    end = strstr(start, close);
    assert_non_null(end);
    text = st_xcalloc((size_t)(end - start) + 1, 1);
    memcpy(text, start, (size_t)(end - start));
    libvirt_xml_unescape(text);
    return text;
}

static void
test_hypervisor_libvirt__xml_escapes_values_and_records_metadata(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF], name[64], want_log[256];
    struct hv_domain_spec spec;
    ST_AUTOFREE char *xml = NULL;
    ST_AUTOFREE char *meta = NULL;
    ST_AUTOFREE char *got_id = NULL;
    ST_AUTOFREE char *got_owner = NULL;
    ST_AUTOFREE char *got_name = NULL;
    virDomainPtr dom;
    struct st_error err;

    st_uuid_generate(id);
    spec_init(&spec, id);
    spec.name = "a<b&'c\"";
    spec.owner_id = "o</stratus:owner><evil/>";
    spec.disk_path = "/var/lib/it's <here>/disk.img";
    spec.disk_format = "raw";
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);

    snprintf(name, sizeof(name), "stratus-%s", id);
    dom = virDomainLookupByName(keeper, name);
    assert_non_null(dom);
    meta = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, STRATUS_NS, 0);
    virDomainFree(dom);
    assert_non_null(meta);
    assert_null(strstr(meta, "<evil"));
    got_id = metadata_text(meta, "id");
    got_owner = metadata_text(meta, "owner");
    got_name = metadata_text(meta, "name");
    assert_string_equal(got_id, id);
    assert_string_equal(got_owner, spec.owner_id);
    assert_string_equal(got_name, spec.name);

    xml = domain_xml(id);
    assert_non_null(strstr(xml, "<uuid>"));
    assert_non_null(strstr(xml, id));
    assert_non_null(strstr(xml, "<memory unit='KiB'>262144</memory>"));
    assert_non_null(strstr(xml, ">2</vcpu>"));
    assert_non_null(strstr(xml, "<boot dev='hd'/>"));
    assert_non_null(strstr(xml, "<on_crash>destroy</on_crash>"));
    assert_non_null(strstr(xml, "type='raw'"));
    assert_non_null(strstr(xml, "bus='virtio'"));
    assert_non_null(strstr(xml, "/var/lib/it&apos;s &lt;here&gt;/disk.img"));
    assert_null(strstr(xml, "<interface"));
    assert_non_null(strstr(xml, "<stratus:instance xmlns:stratus=\"" STRATUS_NS "\">"));
    snprintf(want_log, sizeof(want_log), "<log file='%s/%s.log' append='on'/>", f->dir, id);
    assert_non_null(strstr(xml, want_log));
    assert_non_null(strstr(xml, "<console type='pty'"));
}

/* A deleted VM leaves no console log, also when its domain was already gone. */
static void
test_hypervisor_libvirt__undefine_removes_console_log(void **state)
{
    struct fixture *f = *state;
    struct hv_domain_spec spec;
    char id[ST_ID_BUF];
    char log[128];
    struct st_error err;
    FILE *fp;

    st_uuid_generate(id);
    spec_init(&spec, id);
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    snprintf(log, sizeof(log), "%s/%s.log", f->dir, id);
    fp = fopen(log, "w");
    assert_non_null(fp);
    fputs("STRATUS-GUEST-BOOTED boot=1\n", fp);
    fclose(fp);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), 0);
    assert_int_equal(access(log, F_OK), -1);

    /* Domain already gone, log still there: undefine says not found, log goes. */
    fp = fopen(log, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(access(log, F_OK), -1);
}

static void
test_hypervisor_libvirt__no_console_without_console_dir(void **state)
{
    struct fixture *f = *state;
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct hypervisor hv;
    struct hv_domain_spec spec;
    char id[ST_ID_BUF];
    ST_AUTOFREE char *xml = NULL;
    struct st_error err;

    assert_int_equal(hypervisor_libvirt_open(f->lc, &cfg, &hv, &err), 0);
    st_uuid_generate(id);
    spec_init(&spec, id);
    assert_int_equal(hypervisor_define(&hv, &spec, &err), 0);
    xml = domain_xml(id);
    assert_null(strstr(xml, "<serial"));
    hypervisor_close(&hv);
}

static void
test_hypervisor_libvirt__define_again_replaces(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF];
    struct hv_domain_spec spec;
    struct hv_domain_info *items = NULL;
    ST_AUTOFREE char *xml = NULL;
    size_t n = 0;
    struct st_error err;

    define_new(f, id);
    spec_init(&spec, id);
    spec.vcpus = 3;
    spec.memory_mib = 512;
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    xml = domain_xml(id);
    assert_non_null(strstr(xml, ">3</vcpu>"));
    assert_non_null(strstr(xml, "<memory unit='KiB'>524288</memory>"));
    assert_int_equal(hypervisor_list_all(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].id, id);
    free(items);
}

static void
test_hypervisor_libvirt__define_refuses_bad_spec(void **state)
{
    struct fixture *f = *state;
    struct hv_domain_spec spec;
    char id[ST_ID_BUF];
    struct st_error err;

    spec_init(&spec, "not-a-uuid");
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not-a-uuid"));
    st_uuid_generate(id);
    spec_init(&spec, id);
    spec.disk_path = NULL;
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
}

static void
test_hypervisor_libvirt__ping(void **state)
{
    struct fixture *f = *state;
    struct st_error err;

    assert_int_equal(hypervisor_ping(&f->hv, &err), 0);
}

static void
test_hypervisor_libvirt__unreachable_is_unavailable(void **state)
{
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct libvirt_conn *lc;
    struct hypervisor hv;
    struct hv_domain_info *items = (struct hv_domain_info *)&cfg;
    size_t n = 7;
    char id[ST_ID_BUF];
    enum hv_state st;
    int64_t t0;
    struct st_error err;

    (void)state;
    t0 = st_monotonic_ms();
    lc = libvirt_conn_new(DEAD_URI);
    assert_non_null(lc);
    assert_int_equal(hypervisor_libvirt_open(lc, &cfg, &hv, &err), 0);
    st_uuid_generate(id);
    assert_int_equal(hypervisor_state(&hv, id, &st, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "libvirt at '" DEAD_URI "' is unreachable: "));
    assert_int_equal(hypervisor_ping(&hv, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_int_equal(hypervisor_list_all(&hv, &items, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_ptr_equal(items, (struct hv_domain_info *)&cfg);
    assert_int_equal(n, 7);
    assert_int_equal(hypervisor_start(&hv, id, NULL), -1); /* a NULL error is allowed */
    assert_true(st_monotonic_ms() - t0 < 2000);
    hypervisor_close(&hv);
    libvirt_conn_close(lc);
}

/* A write whose connection is lost may have happened: it is reported, never run twice. */
static void
test_hypervisor_libvirt__lost_connection_fails_a_write_once(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF];
    struct st_error err;

    define_new(f, id);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "libvirt connection was lost during start; it may or may not "
                                    "have happened"));
    assert_non_null(strstr(err.msg, "injected fault"));
    /* It did happen, once; the next call runs on a fresh connection. */
    assert_state(f, id, HV_STATE_RUNNING);
    assert_int_equal(hypervisor_suspend(&f->hv, id, &err), 0);
    assert_state(f, id, HV_STATE_PAUSED);

    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), -1);
    assert_non_null(strstr(err.msg, "lost during destroy"));
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "lost during undefine"));
    assert_int_equal(hypervisor_state(&f->hv, id, &(enum hv_state){0}, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

/* A read whose connection is lost runs once more on a new connection. */
static void
test_hypervisor_libvirt__lost_connection_retries_a_read(void **state)
{
    struct fixture *f = *state;
    struct hv_domain_info *items = NULL;
    char id[ST_ID_BUF];
    size_t n = 0;
    struct st_error err;

    define_new(f, id);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_state(f, id, HV_STATE_SHUTOFF);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_list_all(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].id, id);
    free(items);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_ping(&f->hv, &err), 0);
}

/* States past what these headers know (a newer daemon) are in no set. */
static void
test_hypervisor_libvirt__unknown_states_match_nothing(void **state)
{
    unsigned all = ~0u;

    (void)state;
    assert_true(libvirt_state_in(VIR_DOMAIN_RUNNING, LIBVIRT_STATE_BIT(VIR_DOMAIN_RUNNING)));
    assert_true(libvirt_state_in(VIR_DOMAIN_PMSUSPENDED, all));
    assert_true(libvirt_state_in(VIR_DOMAIN_NOSTATE, all));
    assert_false(libvirt_state_in(VIR_DOMAIN_PAUSED, LIBVIRT_STATE_BIT(VIR_DOMAIN_RUNNING)));
    assert_false(libvirt_state_in(-1, all));
    assert_false(libvirt_state_in(LIBVIRT_DOMAIN_STATE_COUNT, all));
    assert_false(libvirt_state_in(INT_MAX, all));
    assert_false(libvirt_state_in(INT_MIN, all));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__unknown_id_is_not_found, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__wrong_state_is_conflict, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__list_all_sees_only_stratus_domains,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__list_all_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_hypervisor_libvirt__xml_escapes_values_and_records_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__undefine_removes_console_log,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__no_console_without_console_dir,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__define_again_replaces, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__define_refuses_bad_spec, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__ping, setup, teardown),
        cmocka_unit_test(test_hypervisor_libvirt__unreachable_is_unavailable),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__lost_connection_fails_a_write_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__lost_connection_retries_a_read,
                                        setup, teardown),
        cmocka_unit_test(test_hypervisor_libvirt__unknown_states_match_nothing),
    };

    return cmocka_run_group_tests(tests, keeper_group_setup, keeper_group_teardown);
}
