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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "repositories/libvirt/libvirt_backend.h"
#include "repositories/libvirt/libvirt_internal.h"
#include "support/fault.h"
#include "support/keeper.h"
#include "support/tmpdir.h"
#include "util/ids.h"
#include "util/mem.h"

#define TEST_URI "test:///default"
#define DEAD_URI "qemu+unix:///system?socket=/nonexistent"
/* The namespace is a stable contract: tooling reads it from live domains. */
#define STRATUS_NS "https://stratus.dev/xmlns/libvirt/domain/1"

/* Waits for events are bounded: the test driver emits them at once. */
#define EVENT_WAIT_MS 5000
#define EVENTS_MAX 64

/* What a watch callback was given, from libvirt's event thread. */
struct recorder {
    pthread_mutex_t lock;
    size_t n;
    char ids[EVENTS_MAX][ST_ID_BUF];
    enum hv_event events[EVENTS_MAX];
    bool same_thread; /* every call came from the same thread */
    pthread_t thread;
};

struct fixture {
    char dir[64]; /* console log directory */
    struct libvirt_conn *lc;
    struct hypervisor hv;
    /* Watch tests: a hypervisor of its own that watches, closed in teardown. */
    struct hypervisor watcher;
    struct recorder rec;
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
    pthread_mutex_init(&f->rec.lock, NULL);
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

    /* First: the recorder dies with the fixture. */
    hypervisor_close(&f->watcher);
    pthread_mutex_destroy(&f->rec.lock);
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

/* ---- instance metadata and list_meta ---- */

static const struct hv_domain_meta *
meta_find(const struct hv_domain_meta *items, size_t n, const char *id)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (strcmp(items[i].id, id) == 0)
            return &items[i];
    }
    return NULL;
}

static void
test_hypervisor_libvirt__xml_records_the_installation_escaped(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF], plain[ST_ID_BUF], empty[ST_ID_BUF];
    struct hv_domain_spec spec;
    ST_AUTOFREE char *xml = NULL;
    ST_AUTOFREE char *xml_plain = NULL;
    ST_AUTOFREE char *xml_empty = NULL;
    struct st_error err;

    st_uuid_generate(id);
    spec_init(&spec, id);
    spec.instance = "eu-1 <&'\">";
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    xml = domain_xml(id);
    assert_non_null(
        strstr(xml, "<stratus:installation>eu-1 &lt;&amp;'\"&gt;</stratus:installation>"));
    /* Inside the one stratus element, after what was there before. */
    assert_true(strstr(xml, "<stratus:installation>") > strstr(xml, "<stratus:name>"));
    assert_true(strstr(xml, "<stratus:installation>") < strstr(xml, "</stratus:instance>"));

    define_new(f, plain); /* instance NULL */
    xml_plain = domain_xml(plain);
    assert_null(strstr(xml_plain, "installation"));
    st_uuid_generate(empty);
    spec_init(&spec, empty);
    spec.instance = "";
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    xml_empty = domain_xml(empty);
    assert_null(strstr(xml_empty, "installation"));
}

/* A domain defined behind stratus's back, named like one of its domains. */
static void
define_raw(const char *name, const char *uuid, const char *metadata)
{
    ST_AUTOFREE char *xml = st_xasprintf("<domain type='test'><name>%s</name><uuid>%s</uuid>"
                                         "<memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                                         "%s</domain>",
                                         name, uuid, metadata ? metadata : "");
    virDomainPtr dom = virDomainDefineXML(keeper, xml);

    assert_non_null(dom);
    virDomainFree(dom);
}

static void
test_hypervisor_libvirt__list_meta_reads_owner_and_installation_back(void **state)
{
    struct fixture *f = *state;
    char a[ST_ID_BUF], b[ST_ID_BUF], bare[ST_ID_BUF], foreign[ST_ID_BUF], other[ST_ID_BUF];
    char name[64];
    struct hv_domain_spec spec;
    struct hv_domain_meta *items = NULL;
    const struct hv_domain_meta *m;
    size_t n = 0;
    struct st_error err;

    st_uuid_generate(a);
    spec_init(&spec, a);
    spec.owner_id = "o</stratus:owner><evil/>&amp;";
    spec.instance = "eu-1 <&'\">";
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    assert_int_equal(hypervisor_start(&f->hv, a, &err), 0);
    define_new(f, b); /* no instance */

    st_uuid_generate(bare);
    snprintf(name, sizeof(name), "stratus-%s", bare);
    define_raw(name, bare, NULL);
    /* Metadata, but not stratus's: as good as none. */
    st_uuid_generate(foreign);
    snprintf(name, sizeof(name), "stratus-%s", foreign);
    define_raw(name, foreign,
               "<metadata><x:instance xmlns:x='urn:other'><x:owner>someone</x:owner>"
               "</x:instance></metadata>");
    st_uuid_generate(other);
    define_raw("other-meta", other, NULL);

    assert_int_equal(hypervisor_list_meta(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 4); /* neither other-meta nor the driver's own "test" */
    m = meta_find(items, n, a);
    assert_non_null(m);
    assert_string_equal(m->owner_id, spec.owner_id);
    assert_string_equal(m->instance, spec.instance);
    assert_string_equal(hv_state_name(m->state), "running");
    m = meta_find(items, n, b);
    assert_non_null(m);
    assert_string_equal(m->owner_id, "00000000-0000-4000-8000-000000000001");
    assert_string_equal(m->instance, "");
    assert_string_equal(hv_state_name(m->state), "shutoff");
    m = meta_find(items, n, bare);
    assert_non_null(m);
    assert_string_equal(m->owner_id, "");
    assert_string_equal(m->instance, "");
    assert_string_equal(hv_state_name(m->state), "shutoff");
    m = meta_find(items, n, foreign);
    assert_non_null(m);
    assert_string_equal(m->owner_id, "");
    assert_string_equal(m->instance, "");
    assert_null(meta_find(items, n, other));
    free(items);
}

/* A value longer than the field holds was not written by stratus: it reads as none. */
static void
test_hypervisor_libvirt__list_meta_drops_values_that_do_not_fit(void **state)
{
    struct fixture *f = *state;
    char id[ST_ID_BUF], instance[ST_NAME_BUF + 1];
    struct hv_domain_spec spec;
    struct hv_domain_meta *items = NULL;
    size_t n = 0;
    struct st_error err;

    memset(instance, 'i', sizeof(instance) - 1);
    instance[sizeof(instance) - 1] = '\0';
    st_uuid_generate(id);
    spec_init(&spec, id);
    spec.instance = instance;
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    assert_int_equal(hypervisor_list_meta(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].instance, "");
    assert_string_equal(items[0].owner_id, spec.owner_id);
    free(items);

    /* One character less fits exactly. */
    instance[ST_NAME_BUF - 1] = '\0';
    assert_int_equal(hypervisor_define(&f->hv, &spec, &err), 0);
    assert_int_equal(hypervisor_list_meta(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].instance, instance);
    free(items);
}

static void
test_hypervisor_libvirt__list_meta_retries_and_reports_unavailable(void **state)
{
    struct fixture *f = *state;
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct hv_domain_meta *items = NULL;
    struct libvirt_conn *dead;
    struct hypervisor hv;
    char id[ST_ID_BUF];
    size_t n = 0;
    struct st_error err;

    define_new(f, id);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(hypervisor_list_meta(&f->hv, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].id, id);
    free(items);

    dead = libvirt_conn_new(DEAD_URI);
    assert_int_equal(hypervisor_libvirt_open(dead, &cfg, &hv, &err), 0);
    items = NULL;
    n = 7;
    assert_int_equal(hypervisor_list_meta(&hv, &items, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_null(items);
    assert_int_equal(n, 7);
    hypervisor_close(&hv);
    libvirt_conn_close(dead);
}

/* ---- watch ---- */

static void
record_event(void *ctx, const char *id, enum hv_event event)
{
    struct recorder *r = ctx;

    pthread_mutex_lock(&r->lock);
    if (r->n == 0) {
        r->thread = pthread_self();
        r->same_thread = true;
    } else if (!pthread_equal(r->thread, pthread_self())) {
        r->same_thread = false;
    }
    if (r->n < EVENTS_MAX) {
        st_strlcpy(r->ids[r->n], id, sizeof(r->ids[r->n]));
        r->events[r->n] = event;
        r->n++;
    }
    pthread_mutex_unlock(&r->lock);
}

/* The events recorded for @id so far, into @out (at most EVENTS_MAX); how many. */
static size_t
events_of(struct recorder *r, const char *id, enum hv_event *out)
{
    size_t i, k = 0;

    pthread_mutex_lock(&r->lock);
    for (i = 0; i < r->n; i++) {
        if (strcmp(r->ids[i], id) == 0)
            out[k++] = r->events[i];
    }
    pthread_mutex_unlock(&r->lock);
    return k;
}

/* Poll until @want events of @id arrived or EVENT_WAIT_MS passed; how many did. */
static size_t
wait_events(struct recorder *r, const char *id, size_t want, enum hv_event *out)
{
    int64_t until = st_monotonic_ms() + EVENT_WAIT_MS;
    size_t k;

    while ((k = events_of(r, id, out)) < want && st_monotonic_ms() < until)
        st_sleep_ms(10);
    return k;
}

static void
watch_open(struct fixture *f)
{
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct st_error err;

    assert_int_equal(hypervisor_libvirt_open(f->lc, &cfg, &f->watcher, &err), 0);
    assert_int_equal(hypervisor_watch(&f->watcher, record_event, &f->rec, &err), 0);
    /* watch() returns registered: nothing to wait for. */
    assert_int_equal(libvirt_watch_connects(hypervisor_libvirt_watch(&f->watcher)), 1);
}

static const char *
event_name(enum hv_event e)
{
    static const char *const names[] = {
        [HV_EVENT_STARTED] = "started",     [HV_EVENT_STOPPED] = "stopped",
        [HV_EVENT_PAUSED] = "paused",       [HV_EVENT_RESUMED] = "resumed",
        [HV_EVENT_UNDEFINED] = "undefined",
    };

    return (unsigned)e < ST_ARRAY_LEN(names) ? names[e] : "?";
}

static void
assert_events(const enum hv_event *got, size_t n, const enum hv_event *want, size_t nwant)
{
    size_t i;

    assert_int_equal(n, nwant);
    for (i = 0; i < n; i++)
        assert_string_equal(event_name(got[i]), event_name(want[i]));
}

static void
test_hypervisor_libvirt__watch_reports_lifecycle_events(void **state)
{
    struct fixture *f = *state;
    static const enum hv_event want[] = {
        HV_EVENT_STARTED, HV_EVENT_PAUSED,  HV_EVENT_RESUMED,   HV_EVENT_STOPPED,
        HV_EVENT_STARTED, HV_EVENT_STOPPED, HV_EVENT_UNDEFINED,
    };
    enum hv_event got[EVENTS_MAX];
    char id[ST_ID_BUF], other_uuid[VIR_UUID_STRING_BUFLEN];
    virDomainPtr other;
    size_t n;
    struct st_error err;

    watch_open(f);
    /* A foreign domain's events come first; were they passed on, they would be seen first. */
    other = virDomainDefineXML(keeper, "<domain type='test'><name>other-ev</name>"
                                       "<memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                                       "</domain>");
    assert_non_null(other);
    assert_int_equal(virDomainGetUUIDString(other, other_uuid), 0);
    assert_int_equal(virDomainCreate(other), 0);
    assert_int_equal(virDomainDestroy(other), 0);
    assert_int_equal(virDomainUndefine(other), 0);
    virDomainFree(other);

    define_new(f, id); /* DEFINED: not reported */
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_suspend(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_resume(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_shutdown(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_undefine(&f->hv, id, &err), 0);
    n = wait_events(&f->rec, id, ST_ARRAY_LEN(want), got);
    assert_events(got, n, want, ST_ARRAY_LEN(want));
    assert_int_equal(events_of(&f->rec, other_uuid, got), 0);
    pthread_mutex_lock(&f->rec.lock);
    assert_true(f->rec.same_thread);
    assert_false(pthread_equal(f->rec.thread, pthread_self()));
    pthread_mutex_unlock(&f->rec.lock);
}

static void
test_hypervisor_libvirt__watch_registers_again_after_a_loss(void **state)
{
    struct fixture *f = *state;
    static const enum hv_event want[] = {HV_EVENT_STARTED, HV_EVENT_STOPPED};
    enum hv_event got[EVENTS_MAX];
    struct libvirt_watch *w;
    char id[ST_ID_BUF];
    int64_t until;
    size_t n;
    struct st_error err;

    watch_open(f);
    w = hypervisor_libvirt_watch(&f->watcher);
    define_new(f, id);
    libvirt_watch_fault_lose(w);
    until = st_monotonic_ms() + EVENT_WAIT_MS;
    while (libvirt_watch_connects(w) < 2 && st_monotonic_ms() < until)
        st_sleep_ms(10);
    assert_int_equal(libvirt_watch_connects(w), 2);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), 0);
    n = wait_events(&f->rec, id, ST_ARRAY_LEN(want), got);
    st_sleep_ms(200); /* a registration left behind would deliver each event twice */
    n = events_of(&f->rec, id, got);
    assert_events(got, n, want, ST_ARRAY_LEN(want));
}

static void
test_hypervisor_libvirt__watch_ends_with_close(void **state)
{
    struct fixture *f = *state;
    enum hv_event got[EVENTS_MAX];
    char id[ST_ID_BUF];
    int64_t t0;
    struct st_error err;

    watch_open(f);
    define_new(f, id);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(wait_events(&f->rec, id, 1, got), 1);
    t0 = st_monotonic_ms();
    hypervisor_close(&f->watcher);
    assert_true(st_monotonic_ms() - t0 < 1000);
    assert_int_equal(hypervisor_destroy(&f->hv, id, &err), 0);
    st_sleep_ms(200);
    assert_int_equal(events_of(&f->rec, id, got), 1);
}

static void
test_hypervisor_libvirt__watch_is_called_once_and_needs_a_callback(void **state)
{
    struct fixture *f = *state;
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct st_error err;

    assert_int_equal(hypervisor_libvirt_open(f->lc, &cfg, &f->watcher, &err), 0);
    assert_null(hypervisor_libvirt_watch(&f->watcher));
    assert_int_equal(hypervisor_watch(&f->watcher, NULL, NULL, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_int_equal(hypervisor_watch(&f->watcher, record_event, &f->rec, &err), 0);
    assert_int_equal(hypervisor_watch(&f->watcher, record_event, &f->rec, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, TEST_URI));
}

/* libvirt down when watching starts: no error, the thread keeps trying, close still prompt. */
static void
test_hypervisor_libvirt__watch_of_an_unreachable_libvirt_keeps_trying(void **state)
{
    struct hypervisor_libvirt_config cfg = {.virt_type = "kvm"};
    struct recorder rec = {.n = 0};
    struct libvirt_conn *lc;
    struct hypervisor hv;
    int64_t t0;
    struct st_error err;

    (void)state;
    pthread_mutex_init(&rec.lock, NULL);
    lc = libvirt_conn_new(DEAD_URI);
    assert_int_equal(hypervisor_libvirt_open(lc, &cfg, &hv, &err), 0);
    t0 = st_monotonic_ms();
    assert_int_equal(hypervisor_watch(&hv, record_event, &rec, &err), 0);
    assert_int_equal(libvirt_watch_connects(hypervisor_libvirt_watch(&hv)), 0);
    st_sleep_ms(700); /* past the first retry */
    hypervisor_close(&hv);
    assert_true(st_monotonic_ms() - t0 < 2000);
    assert_int_equal(rec.n, 0);
    libvirt_conn_close(lc);
    pthread_mutex_destroy(&rec.lock);
}

static void
test_hypervisor_libvirt__event_mapping(void **state)
{
    static const struct {
        int event, detail;
        bool mapped;
        enum hv_event want;
    } cases[] = {
        {VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_BOOTED, true, HV_EVENT_STARTED},
        {VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_RESTORED, true, HV_EVENT_STARTED},
        {VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_DESTROYED, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_CRASHED, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_SHUTDOWN, VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_SHUTDOWN, VIR_DOMAIN_EVENT_SHUTDOWN_GUEST, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_SHUTDOWN, VIR_DOMAIN_EVENT_SHUTDOWN_HOST, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_SHUTDOWN, 99, false, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_CRASHED, VIR_DOMAIN_EVENT_CRASHED_PANICKED, true, HV_EVENT_STOPPED},
        {VIR_DOMAIN_EVENT_SUSPENDED, VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, true, HV_EVENT_PAUSED},
        {VIR_DOMAIN_EVENT_SUSPENDED, VIR_DOMAIN_EVENT_SUSPENDED_IOERROR, true, HV_EVENT_PAUSED},
        {VIR_DOMAIN_EVENT_RESUMED, VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, true, HV_EVENT_RESUMED},
        {VIR_DOMAIN_EVENT_UNDEFINED, VIR_DOMAIN_EVENT_UNDEFINED_REMOVED, true, HV_EVENT_UNDEFINED},
        {VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_DEFINED_ADDED, false, HV_EVENT_STARTED},
        {VIR_DOMAIN_EVENT_PMSUSPENDED, 0, false, HV_EVENT_STARTED},
        {99, 0, false, HV_EVENT_STARTED},
        {-1, 0, false, HV_EVENT_STARTED},
    };
    enum hv_event got;
    size_t i;

    (void)state;
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        got = (enum hv_event) - 1;
        assert_int_equal(libvirt_event_map(cases[i].event, cases[i].detail, &got), cases[i].mapped);
        if (cases[i].mapped)
            assert_string_equal(event_name(got), event_name(cases[i].want));
    }
}

/* ---- the fault wrapper's new methods ---- */

static void
bare_close(void *self)
{
    (void)self;
}

static void
test_hypervisor_libvirt__fault_wrapper_forwards_list_meta_and_watch(void **state)
{
    struct fixture *f = *state;
    static const struct hypervisor_ops bare_ops = {.close = bare_close};
    struct hypervisor bare = {.ops = &bare_ops};
    struct fault_hypervisor w, wb;
    struct hv_domain_meta *items = NULL;
    enum hv_event got[EVENTS_MAX];
    char id[ST_ID_BUF];
    size_t n = 0;
    struct st_error err;

    define_new(f, id);
    fault_hypervisor_init(&w, &f->hv);
    assert_int_equal(hypervisor_list_meta(&w.iface, &items, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].id, id);
    free(items);
    items = NULL;
    fault_hypervisor_fail(&w, FAULT_HV_LIST_META, 1, ST_ERR_UNAVAILABLE);
    assert_int_equal(hypervisor_list_meta(&w.iface, &items, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "injected fault: list_meta"));
    assert_int_equal(fault_hypervisor_calls(&w, FAULT_HV_LIST_META), 2);

    /* watch: failed once, then handed on to the real backend. */
    assert_int_equal(
        hypervisor_libvirt_open(f->lc, &(struct hypervisor_libvirt_config){.virt_type = "kvm"},
                                &f->watcher, &err),
        0);
    fault_hypervisor_init(&w, &f->watcher);
    fault_hypervisor_fail(&w, FAULT_HV_WATCH, 1, ST_ERR_BACKEND);
    assert_int_equal(hypervisor_watch(&w.iface, record_event, &f->rec, &err), -1);
    assert_int_equal(err.code, ST_ERR_BACKEND);
    assert_null(hypervisor_libvirt_watch(&f->watcher));
    assert_int_equal(hypervisor_watch(&w.iface, record_event, &f->rec, &err), 0);
    assert_int_equal(fault_hypervisor_calls(&w, FAULT_HV_WATCH), 2);
    assert_int_equal(hypervisor_start(&f->hv, id, &err), 0);
    assert_int_equal(wait_events(&f->rec, id, 1, got), 1);

    /* A backend without the optional methods: unsupported through the wrapper too. */
    fault_hypervisor_init(&wb, &bare);
    assert_int_equal(hypervisor_list_meta(&wb.iface, &items, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNSUPPORTED);
    assert_int_equal(hypervisor_watch(&wb.iface, record_event, &f->rec, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNSUPPORTED);
    assert_int_equal(fault_hypervisor_calls(&wb, FAULT_HV_WATCH), 1);
}

#define T(name) cmocka_unit_test_setup_teardown(test_hypervisor_libvirt__##name, setup, teardown)

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
        T(xml_records_the_installation_escaped),
        T(list_meta_reads_owner_and_installation_back),
        T(list_meta_drops_values_that_do_not_fit),
        T(list_meta_retries_and_reports_unavailable),
        T(watch_reports_lifecycle_events),
        T(watch_registers_again_after_a_loss),
        T(watch_ends_with_close),
        T(watch_is_called_once_and_needs_a_callback),
        cmocka_unit_test(test_hypervisor_libvirt__watch_of_an_unreachable_libvirt_keeps_trying),
        cmocka_unit_test(test_hypervisor_libvirt__event_mapping),
        T(fault_wrapper_forwards_list_meta_and_watch),
    };

    return cmocka_run_group_tests(tests, keeper_group_setup, keeper_group_teardown);
}
