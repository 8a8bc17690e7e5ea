#include "repositories/libvirt/libvirt_backend.h"

#include "repositories/libvirt/libvirt_internal.h"
#include "util/ids.h"
#include "util/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct st_libvirt {
    struct libvirt_conn *lc; /* borrowed */
    char *import_dir;
};

/* Chunk of the import copy; all-zero chunks become holes. */
#define ST_COPY_CHUNK (256 * 1024)

/* ---- XML reading: libvirt's own output, so a plain scan is enough ---- */

/*
 * Copy of the text between @open and the next @close inside [from, limit),
 * unescaped; NULL when absent.  Caller free()s.
 */
static char *
st_xml_text(const char *from, const char *limit, const char *open, const char *close)
{
    const char *start = strstr(from, open);
    const char *end;
    char *text;

    if (!start || (limit && start >= limit))
        return NULL;
    start += strlen(open);
    end = strstr(start, close);
    if (!end || (limit && end > limit))
        return NULL;
    text = st_xcalloc((size_t)(end - start) + 1, 1);
    memcpy(text, start, (size_t)(end - start));
    libvirt_xml_unescape(text);
    return text;
}

/* The target path of a pool's XML; NULL when absent.  Caller free()s. */
static char *
st_pool_xml_path(const char *xml)
{
    const char *target = strstr(xml, "<target>");

    if (!target)
        return NULL;
    return st_xml_text(target, strstr(target, "</target>"), "<path>", "</path>");
}

/* Format and backing file as the volume's XML states them. */
static void
st_vol_xml_read(const char *xml, struct storage_vol_info *out)
{
    const char *target = strstr(xml, "<target>");
    const char *backing = strstr(xml, "<backingStore>");
    ST_AUTOFREE char *format = NULL;
    ST_AUTOFREE char *path = NULL;

    if (target)
        format = st_xml_text(target, strstr(target, "</target>"), "<format type='", "'");
    if (format)
        st_strlcpy(out->format, format, sizeof(out->format));
    if (backing)
        path = st_xml_text(backing, strstr(backing, "</backingStore>"), "<path>", "</path>");
    out->has_backing = path && *path;
}

/* @path without doubled or trailing slashes, as libvirt stores pool paths.  Caller free()s. */
static char *
st_path_clean(const char *path)
{
    char *out = st_xstrdup(path);
    char *q = out;
    const char *p;

    for (p = path; *p; p++) {
        if (*p == '/' && q > out && q[-1] == '/')
            continue;
        *q++ = *p;
    }
    while (q > out + 1 && q[-1] == '/')
        q--;
    *q = '\0';
    return out;
}

/* ---- probing an image by its header ---- */

static uint64_t
st_be64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t
st_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t
st_le32(const unsigned char *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* qcow2 header fields (big-endian) and feature bits, as qemu's docs/interop/qcow2.txt has them. */
#define ST_QCOW2_CRYPT_METHOD 32 /* u32: 0 none, 1 AES, 2 LUKS */
#define ST_QCOW2_V2_HEADER 72
#define ST_QCOW2_INCOMPATIBLE 72 /* u64, version 3 on */
#define ST_QCOW2_V3_HEADER 104
#define ST_QCOW2_DATA_FILE (1ull << 2)
/* dirty, corrupt, compression type, extended L2 entries: none reaches outside the file. */
#define ST_QCOW2_HARMLESS ((1ull << 0) | (1ull << 1) | (1ull << 3) | (1ull << 4))

/*
 * Fill @out from a qcow2 header (@got bytes at @head).  Besides a backing
 * file, an image can read outside itself through an external data file: a
 * guest would then see a host file of the uploader's choosing.  That,
 * encryption and anything this code does not understand set refusal.
 */
static void
st_probe_qcow2(const unsigned char *head, size_t got, struct storage_vol_info *out)
{
    uint32_t version = st_be32(head + 4);
    uint64_t incompatible = 0;

    out->has_backing = st_be64(head + 8) != 0;
    out->capacity = st_be64(head + 24);
    if (version >= 3 && got >= ST_QCOW2_V3_HEADER)
        incompatible = st_be64(head + ST_QCOW2_INCOMPATIBLE);
    if (got < ST_QCOW2_V2_HEADER || (version >= 3 && got < ST_QCOW2_V3_HEADER))
        snprintf(out->refusal, sizeof(out->refusal), "qcow2 header is truncated (%zu bytes)", got);
    else if (version > 3)
        snprintf(out->refusal, sizeof(out->refusal),
                 "qcow2 version %" PRIu32 " is not supported; only versions 2 and 3 are accepted",
                 version);
    else if (st_be32(head + ST_QCOW2_CRYPT_METHOD) != 0)
        snprintf(out->refusal, sizeof(out->refusal),
                 "qcow2 image is encrypted (crypt_method %" PRIu32
                 "); only unencrypted images are accepted",
                 st_be32(head + ST_QCOW2_CRYPT_METHOD));
    else if (incompatible & ST_QCOW2_DATA_FILE)
        snprintf(out->refusal, sizeof(out->refusal),
                 "qcow2 image uses an external data file; only standalone images are accepted");
    else if (incompatible & ~ST_QCOW2_HARMLESS)
        snprintf(out->refusal, sizeof(out->refusal),
                 "qcow2 image uses unknown incompatible features 0x%" PRIx64,
                 (uint64_t)(incompatible & ~ST_QCOW2_HARMLESS));
    if (out->refusal[0])
        out->has_backing = true;
}

/*
 * Fill format, capacity, allocation, has_backing and refusal of @out from
 * the image open at @fd.  Formats other than qcow2 and raw are only named,
 * so the caller can refuse them.
 */
static int
st_probe_fd(int fd, const char *path, struct storage_vol_info *out, struct st_error *err)
{
    static const struct {
        size_t offset;
        const char *magic;
        size_t len;
        const char *format;
    } magics[] = {
        {0, "QED\0", 4, "qed"},
        {0, "KDMV", 4, "vmdk"},
        {0, "# Disk DescriptorFile", 21, "vmdk"},
        {0, "vhdxfile", 8, "vhdx"},
        {0, "conectix", 8, "vpc"},
        {0, "LUKS\xba\xbe", 6, "luks"},
    };
    unsigned char head[512];
    struct stat st;
    ssize_t got;
    size_t i;

    if (fstat(fd, &st) < 0)
        return st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot stat '%s': %s", path,
                                   strerror(errno));
    memset(head, 0, sizeof(head));
    got = pread(fd, head, sizeof(head), 0);
    if (got < 0)
        return st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot read '%s': %s", path,
                                   strerror(errno));
    out->allocation = (uint64_t)st.st_blocks * 512;
    out->capacity = (uint64_t)st.st_size;
    out->has_backing = false;
    out->refusal[0] = '\0';
    st_strlcpy(out->format, "raw", sizeof(out->format));
    if (got >= 32 && memcmp(head, "QFI\xfb", 4) == 0) {
        /* qcow (v1) and qcow2 share the magic, the backing offset at 8 and the size at 24. */
        if (st_be32(head + 4) < 2) {
            st_strlcpy(out->format, "qcow", sizeof(out->format));
            out->has_backing = st_be64(head + 8) != 0;
            out->capacity = st_be64(head + 24);
            return 0;
        }
        st_strlcpy(out->format, "qcow2", sizeof(out->format));
        st_probe_qcow2(head, (size_t)got, out);
        return 0;
    }
    if (got >= 68 && st_le32(head + 64) == 0xbeda107f) {
        st_strlcpy(out->format, "vdi", sizeof(out->format));
        return 0;
    }
    for (i = 0; i < ST_ARRAY_LEN(magics); i++) {
        if ((size_t)got >= magics[i].offset + magics[i].len &&
            memcmp(head + magics[i].offset, magics[i].magic, magics[i].len) == 0) {
            st_strlcpy(out->format, magics[i].format, sizeof(out->format));
            return 0;
        }
    }
    return 0;
}

/* Probe the file at @path when this process can read it; 1 when probed, 0 when not readable. */
static int
st_probe_path(const char *path, struct storage_vol_info *out, struct st_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int rc;

    if (fd < 0)
        return 0;
    rc = st_probe_fd(fd, path, out, err);
    close(fd);
    return rc < 0 ? -1 : 1;
}

/* ---- libvirt look-ups ---- */

static virStoragePoolPtr
st_pool_lookup(virConnectPtr conn, const char *pool, struct st_error *err)
{
    virStoragePoolPtr p = virStoragePoolLookupByName(conn, pool);

    if (!p)
        libvirt_error_set(err, "no storage pool '%s'", pool);
    return p;
}

static virStorageVolPtr
st_vol_lookup(virStoragePoolPtr p, const char *pool, const char *vol, struct st_error *err)
{
    virStorageVolPtr v = virStorageVolLookupByName(p, vol);

    if (!v)
        libvirt_error_set(err, "no volume '%s' in storage pool '%s'", vol, pool);
    return v;
}

/* 0 when @vol is not in the pool yet; ST_ERR_CONFLICT when it is. */
static int
st_vol_absent(virStoragePoolPtr p, const char *pool, const char *vol, struct st_error *err)
{
    virStorageVolPtr v = virStorageVolLookupByName(p, vol);

    if (v) {
        virStorageVolFree(v);
        return st_error_set(err, ST_ERR_CONFLICT, "volume '%s' already exists in storage pool '%s'",
                            vol, pool);
    }
    if (libvirt_last_error_code() == VIR_ERR_NO_STORAGE_VOL)
        return 0;
    return libvirt_error_set(err, "cannot look up volume '%s' in storage pool '%s'", vol, pool);
}

/*
 * What libvirt knows of @v, then what its header says when the file is
 * readable here (the header is the truth about format and backing file).
 */
static int
st_vol_fill(virStorageVolPtr v, const char *vol, struct storage_vol_info *out, struct st_error *err)
{
    struct storage_vol_info info = {0};
    virStorageVolInfo vinfo;
    ST_AUTOFREE char *path = NULL;
    ST_AUTOFREE char *xml = NULL;

    path = virStorageVolGetPath(v);
    if (!path)
        return libvirt_error_set(err, "cannot read the path of volume '%s'", vol);
    if (virStorageVolGetInfo(v, &vinfo) < 0)
        return libvirt_error_set(err, "cannot read volume '%s'", vol);
    info.capacity = vinfo.capacity;
    info.allocation = vinfo.allocation;
    xml = virStorageVolGetXMLDesc(v, 0);
    if (!xml)
        return libvirt_error_set(err, "cannot read the definition of volume '%s'", vol);
    st_vol_xml_read(xml, &info);
    if (st_strlcpy(info.path, path, sizeof(info.path)) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "the path of volume '%s' is too long", vol);
    if (st_probe_path(path, &info, err) < 0)
        return -1;
    *out = info;
    return 0;
}

/* ---- ensure_pool ---- */

struct st_pool_arg {
    const char *pool;
    const char *dir;
};

/*
 * Build (mkdir) and start an inactive pool.  Plain build: for a dir pool
 * it creates the directory and keeps what is in it, while NO_OVERWRITE
 * makes libvirt look for a source device a dir pool does not have.
 */
static int
st_pool_activate(virStoragePoolPtr p, const char *pool, struct st_error *err)
{
    if (virStoragePoolBuild(p, 0) < 0)
        return libvirt_error_set(err, "cannot build storage pool '%s'", pool);
    if (virStoragePoolCreate(p, 0) < 0)
        return libvirt_error_set(err, "cannot start storage pool '%s'", pool);
    return 0;
}

/* An existing pool: same directory, then active and autostarted. */
static int
st_pool_check(virStoragePoolPtr p, const struct st_pool_arg *a, struct st_error *err)
{
    ST_AUTOFREE char *xml = virStoragePoolGetXMLDesc(p, 0);
    ST_AUTOFREE char *have = NULL;
    ST_AUTOFREE char *want = st_path_clean(a->dir);
    ST_AUTOFREE char *clean = NULL;
    int active, autostart = 0;

    if (!xml)
        return libvirt_error_set(err, "cannot read storage pool '%s'", a->pool);
    have = st_pool_xml_path(xml);
    clean = st_path_clean(have ? have : "");
    if (strcmp(clean, want) != 0)
        return st_error_set(err, ST_ERR_CONFLICT,
                            "storage pool '%s' exists with target path '%s', not '%s'", a->pool,
                            have ? have : "", a->dir);
    active = virStoragePoolIsActive(p);
    if (active < 0)
        return libvirt_error_set(err, "cannot read storage pool '%s'", a->pool);
    if (active == 0 && st_pool_activate(p, a->pool, err) < 0)
        return -1;
    if (virStoragePoolGetAutostart(p, &autostart) < 0)
        return libvirt_error_set(err, "cannot read storage pool '%s'", a->pool);
    if (!autostart && virStoragePoolSetAutostart(p, 1) < 0)
        return libvirt_error_set(err, "cannot autostart storage pool '%s'", a->pool);
    return 0;
}

static int
st_ensure_pool_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    const struct st_pool_arg *a = arg;
    virStoragePoolPtr p;
    int rc;

    p = virStoragePoolLookupByName(conn, a->pool);
    if (!p) {
        ST_AUTOFREE char *name = NULL;
        ST_AUTOFREE char *dir = NULL;
        ST_AUTOFREE char *xml = NULL;

        if (libvirt_last_error_code() != VIR_ERR_NO_STORAGE_POOL)
            return libvirt_error_set(err, "cannot look up storage pool '%s'", a->pool);
        name = libvirt_xml_escape(a->pool);
        dir = libvirt_xml_escape(a->dir);
        xml = st_xasprintf("<pool type='dir'>\n"
                           "  <name>%s</name>\n"
                           "  <target>\n"
                           "    <path>%s</path>\n"
                           "  </target>\n"
                           "</pool>\n",
                           name, dir);
        p = virStoragePoolDefineXML(conn, xml, 0);
        if (!p)
            return libvirt_error_set(err, "cannot define storage pool '%s' at '%s'", a->pool,
                                     a->dir);
    }
    rc = st_pool_check(p, a, err);
    virStoragePoolFree(p);
    return rc;
}

static int
st_ensure_pool(void *self, const char *pool, const char *dir, struct st_error *err)
{
    struct st_pool_arg arg = {.pool = pool, .dir = dir};
    struct st_error local = {0};
    int attempt;

    if (!pool || !*pool || !dir || dir[0] != '/')
        return st_error_set(err, ST_ERR_INVALID,
                            "a storage pool needs a name and an absolute directory, not '%s'",
                            dir ? dir : "");
    /*
     * Several workers start at once and race to define and start the same
     * pool: a loser sees "already exists" or "already active".  Looking
     * again finds the pool as the winner left it, so retry a few times.
     */
    for (attempt = 0; attempt < 5; attempt++) {
        if (libvirt_conn_run(((struct st_libvirt *)self)->lc, LIBVIRT_OP_READ, "pool set-up",
                             st_ensure_pool_op, &arg, &local) == 0)
            return 0;
        /* libvirt reports the lost race as a backend error or an invalid operation. */
        if (local.code != ST_ERR_BACKEND && local.code != ST_ERR_CONFLICT)
            break;
        st_sleep_ms(20 * (attempt + 1));
    }
    if (err)
        *err = local;
    return -1;
}

/* ---- volumes ---- */

/*
 * One volume of one pool.  With @xml the volume is created from it (and
 * must not exist before), else it is looked up, after a refresh of the
 * pool when asked.  Then its details go to @out; with neither @out nor
 * @xml the volume is deleted.
 */
struct st_vol_arg {
    const char *pool;
    const char *vol;
    const char *xml;              /* create the volume from this */
    bool refresh;                 /* refresh the pool before the look-up */
    struct storage_vol_info *out; /* NULL: delete a looked-up volume */
};

/* The volume of @a in pool @p, made or found as @a says; NULL with @err filled. */
static virStorageVolPtr
st_vol_get(virStoragePoolPtr p, const struct st_vol_arg *a, struct st_error *err)
{
    virStorageVolPtr v;

    if (a->xml) {
        if (st_vol_absent(p, a->pool, a->vol, err) < 0)
            return NULL;
        v = virStorageVolCreateXML(p, a->xml, 0);
        if (!v)
            libvirt_error_set(err, "cannot create volume '%s' in storage pool '%s'", a->vol,
                              a->pool);
        return v;
    }
    if (a->refresh && virStoragePoolRefresh(p, 0) < 0) {
        libvirt_error_set(err, "cannot refresh storage pool '%s'", a->pool);
        return NULL;
    }
    return st_vol_lookup(p, a->pool, a->vol, err);
}

static int
st_vol_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    const struct st_vol_arg *a = arg;
    virStoragePoolPtr p;
    virStorageVolPtr v;
    int rc = -1;

    p = st_pool_lookup(conn, a->pool, err);
    if (!p)
        return -1;
    v = st_vol_get(p, a, err);
    if (!v)
        goto out;
    if (a->out)
        rc = st_vol_fill(v, a->vol, a->out, err);
    else if (a->xml)
        rc = 0;
    else if ((rc = virStorageVolDelete(v, 0)) < 0)
        libvirt_error_set(err, "cannot delete volume '%s' from storage pool '%s'", a->vol, a->pool);
    virStorageVolFree(v);
out:
    virStoragePoolFree(p);
    return rc < 0 ? -1 : 0;
}

static int
st_clone_overlay(void *self, const char *pool, const char *vol, const char *backing_path,
                 const char *backing_format, uint64_t capacity, struct storage_vol_info *out,
                 struct st_error *err)
{
    struct st_libvirt *s = self;
    ST_AUTOFREE char *name = libvirt_xml_escape(vol);
    ST_AUTOFREE char *bpath = libvirt_xml_escape(backing_path);
    ST_AUTOFREE char *bformat = libvirt_xml_escape(backing_format);
    ST_AUTOFREE char *xml = NULL;
    struct storage_vol_info info = {0};
    struct st_vol_arg arg = {.pool = pool, .vol = vol, .out = &info};

    if (!backing_path || backing_path[0] != '/' || !backing_format || !*backing_format)
        return st_error_set(err, ST_ERR_INVALID,
                            "volume '%s' needs an absolute backing path and its format, not '%s'",
                            vol, backing_path ? backing_path : "");
    /*
     * Allocation 0: qemu-img makes a thin overlay, and pools check allocation
     * against free space.  compat 1.1 (qcow2 v3): libvirt's default is 0.10.
     */
    xml = st_xasprintf("<volume>\n"
                       "  <name>%s</name>\n"
                       "  <capacity unit='bytes'>%" PRIu64 "</capacity>\n"
                       "  <allocation unit='bytes'>0</allocation>\n"
                       "  <target>\n"
                       "    <format type='qcow2'/>\n"
                       "    <compat>1.1</compat>\n"
                       "  </target>\n"
                       "  <backingStore>\n"
                       "    <path>%s</path>\n"
                       "    <format type='%s'/>\n"
                       "  </backingStore>\n"
                       "</volume>\n",
                       name, capacity, bpath, bformat);
    arg.xml = xml;
    if (libvirt_conn_run(s->lc, LIBVIRT_OP_WRITE, "volume create", st_vol_op, &arg, err) < 0)
        return -1;
    *out = info;
    return 0;
}

/*
 * @path made canonical as text, without asking the file system: "." and
 * ".." resolved, slashes collapsed.  false when @path is not absolute or
 * too long.  The result is never longer than @path.
 */
static bool
st_path_lexical(const char *path, char clean[PATH_MAX])
{
    const char *p = path, *seg;
    size_t len = 0, n;

    if (!path || path[0] != '/' || strlen(path) >= PATH_MAX)
        return false;
    while (*p) {
        while (*p == '/')
            p++;
        seg = p;
        while (*p && *p != '/')
            p++;
        n = (size_t)(p - seg);
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (len > 0 && clean[len - 1] != '/')
                len--;
            if (len > 0)
                len--;
            continue;
        }
        clean[len++] = '/';
        memcpy(clean + len, seg, n);
        len += n;
    }
    if (len == 0)
        clean[len++] = '/';
    clean[len] = '\0';
    return true;
}

/* Whether canonical @path lies strictly below canonical @dir. */
static bool
st_path_below(const char *path, const char *dir)
{
    size_t len = strcmp(dir, "/") == 0 ? 0 : strlen(dir);

    return strncmp(path, dir, len) == 0 && path[len] == '/' && path[len + 1] != '\0';
}

/* Whether descriptor @fd is open on a file below the real path of @dir. */
static int
st_fd_below(int fd, const char *dir, bool *below, struct st_error *err)
{
    char real_dir[PATH_MAX], link[64], target[PATH_MAX];
    ssize_t n;
    size_t len;

    if (!realpath(dir, real_dir))
        return st_error_set_native(err, ST_ERR_INVALID, errno,
                                   "the import directory '%s' is not usable: %s", dir,
                                   strerror(errno));
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof(target) - 1);
    if (n < 0 || (size_t)n >= sizeof(target) - 1)
        return st_error_set_native(err, ST_ERR_BACKEND, n < 0 ? errno : 0,
                                   "cannot tell which file '%s' is: %s", link,
                                   n < 0 ? strerror(errno) : "path too long");
    target[n] = '\0';
    len = strcmp(real_dir, "/") == 0 ? 0 : strlen(real_dir);
    *below = strncmp(target, real_dir, len) == 0 && target[len] == '/';
    return 0;
}

/*
 * Open @source for import.  Returns the descriptor, or -1 with
 * ST_ERR_INVALID when it is not a regular file below the import directory.
 * The path is first checked as text, so nothing outside the directory is
 * ever touched and one message answers for every such path (no probing
 * which host files exist); then the file actually opened is checked, so a
 * symlink inside the directory (or swapped in meanwhile) cannot lead out.
 */
static int
st_import_open(const struct st_libvirt *s, const char *source, struct stat *st,
               struct st_error *err)
{
    char clean[PATH_MAX];
    bool below = false;
    int fd, rc;

    if (!s->import_dir)
        return st_error_set(err, ST_ERR_INVALID, "no import directory is configured");
    if (!st_path_lexical(source, clean) || !st_path_below(clean, s->import_dir))
        goto outside;
    fd = open(clean, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return st_error_set_native(err, ST_ERR_INVALID, errno, "cannot open source_path '%s': %s",
                                   source, strerror(errno));
    rc = st_fd_below(fd, s->import_dir, &below, err);
    if (rc < 0 || !below) {
        close(fd);
        if (rc < 0)
            return -1;
        goto outside;
    }
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return st_error_set(err, ST_ERR_INVALID, "source_path '%s' is not a regular file", source);
    }
    return fd;
outside:
    return st_error_set(err, ST_ERR_INVALID,
                        "source_path '%s' is not inside the import directory '%s'",
                        source ? source : "", s->import_dir);
}

static bool
st_all_zero(const char *buf, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (buf[i])
            return false;
    }
    return true;
}

/* Copy bytes [from, to) of @in to the same place in @out, leaving all-zero chunks as holes. */
static int
st_copy_range(int in, int out, uint64_t from, uint64_t to, char *buf, const char *path,
              struct st_error *err)
{
    uint64_t done = from;
    size_t want;
    ssize_t got, put;

    while (done < to) {
        want = to - done < ST_COPY_CHUNK ? (size_t)(to - done) : ST_COPY_CHUNK;
        got = pread(in, buf, want, (off_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return st_error_set_native(err, ST_ERR_BACKEND, got < 0 ? errno : 0,
                                       "cannot read the source file for '%s': %s", path,
                                       got < 0 ? strerror(errno) : "it shrank while copying");
        if (!st_all_zero(buf, (size_t)got)) {
            put = pwrite(out, buf, (size_t)got, (off_t)done);
            if (put != got)
                return st_error_set_native(err, ST_ERR_BACKEND, put < 0 ? errno : 0,
                                           "cannot write '%s': %s", path,
                                           put < 0 ? strerror(errno) : "short write");
        }
        done += (uint64_t)got;
    }
    return 0;
}

/*
 * Copy the first @size bytes of @in, visiting only its data extents
 * (SEEK_DATA/SEEK_HOLE), so a mostly empty image of many GiB copies in
 * moments.  Falls back on reading everything where seeking for data is
 * not supported.
 */
static int
st_copy_sparse(int in, int out, uint64_t size, char *buf, const char *path, struct st_error *err)
{
    uint64_t pos = 0;
    off_t data, hole;

    while (pos < size) {
        data = lseek(in, (off_t)pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            return 0; /* only a hole is left */
        if (data < 0 && pos == 0 && (errno == EINVAL || errno == EOPNOTSUPP))
            return st_copy_range(in, out, 0, size, buf, path, err);
        if (data >= 0)
            hole = lseek(in, data, SEEK_HOLE);
        if (data < 0 || hole < 0)
            return st_error_set_native(err, ST_ERR_BACKEND, errno,
                                       "cannot find the data in the source file for '%s': %s", path,
                                       strerror(errno));
        if ((uint64_t)data >= size)
            return 0;
        if ((uint64_t)hole > size)
            hole = (off_t)size;
        if (st_copy_range(in, out, (uint64_t)data, (uint64_t)hole, buf, path, err) < 0)
            return -1;
        pos = (uint64_t)hole;
    }
    return 0;
}

/* Copy @in onto @path (truncated, mode 0644), keeping holes and zero runs as holes. */
static int
st_copy_to(int in, uint64_t size, const char *path, struct st_error *err)
{
    ST_AUTOFREE char *buf = st_xcalloc(1, ST_COPY_CHUNK);
    int out, rc = -1;

    out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0)
        return st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot open volume file '%s': %s",
                                   path, strerror(errno));
    if (fchmod(out, 0644) < 0) {
        st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot chmod '%s': %s", path,
                            strerror(errno));
        goto out;
    }
    if (st_copy_sparse(in, out, size, buf, path, err) < 0)
        goto out;
    /* Trailing holes are not written: set the length explicitly. */
    if (ftruncate(out, (off_t)size) < 0 || fsync(out) < 0) {
        st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot finish '%s': %s", path,
                            strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (close(out) < 0 && rc == 0)
        rc = st_error_set_native(err, ST_ERR_BACKEND, errno, "cannot write '%s': %s", path,
                                 strerror(errno));
    return rc;
}

static int
st_remove(void *self, const char *pool, const char *vol, struct st_error *err)
{
    struct st_vol_arg arg = {.pool = pool, .vol = vol};

    return libvirt_conn_run(((struct st_libvirt *)self)->lc, LIBVIRT_OP_WRITE, "volume delete",
                            st_vol_op, &arg, err);
}

static int
st_info(void *self, const char *pool, const char *vol, struct storage_vol_info *out,
        struct st_error *err)
{
    struct storage_vol_info info = {0};
    struct st_vol_arg arg = {.pool = pool, .vol = vol, .out = &info};

    if (libvirt_conn_run(((struct st_libvirt *)self)->lc, LIBVIRT_OP_READ, "volume info", st_vol_op,
                         &arg, err) < 0)
        return -1;
    *out = info;
    return 0;
}

/*
 * The volume is created through libvirt first so it belongs to the pool
 * whatever the driver, then its file is overwritten with the source's bytes
 * and the pool refreshed so libvirt sees the real size.
 */
static int
st_import(void *self, const char *pool, const char *vol, const char *source_path,
          struct storage_vol_info *out, struct st_error *err)
{
    struct st_libvirt *s = self;
    ST_AUTOFREE char *name = libvirt_xml_escape(vol);
    ST_AUTOFREE char *xml = NULL;
    struct storage_vol_info info = {0};
    struct st_vol_arg create = {.pool = pool, .vol = vol, .out = &info};
    struct st_vol_arg refresh = {.pool = pool, .vol = vol, .refresh = true, .out = &info};
    struct st_vol_arg drop = {.pool = pool, .vol = vol};
    struct stat st;
    int fd, rc = -1;

    fd = st_import_open(s, source_path, &st, err);
    if (fd < 0)
        return -1;
    xml = st_xasprintf("<volume>\n"
                       "  <name>%s</name>\n"
                       "  <capacity unit='bytes'>%" PRIu64 "</capacity>\n"
                       "  <allocation unit='bytes'>0</allocation>\n"
                       "  <target>\n"
                       "    <format type='raw'/>\n"
                       "    <permissions>\n"
                       "      <mode>0644</mode>\n"
                       "    </permissions>\n"
                       "  </target>\n"
                       "</volume>\n",
                       name, (uint64_t)st.st_size);
    create.xml = xml;
    if (libvirt_conn_run(s->lc, LIBVIRT_OP_WRITE, "import", st_vol_op, &create, err) < 0)
        goto out;
    /* A refresh only rereads the pool: safe to repeat. */
    if (st_copy_to(fd, (uint64_t)st.st_size, info.path, err) < 0 ||
        libvirt_conn_run(s->lc, LIBVIRT_OP_READ, "import", st_vol_op, &refresh, err) < 0) {
        /* Leave nothing behind; the copy's error is the one to report. */
        libvirt_conn_run(s->lc, LIBVIRT_OP_WRITE, "volume delete", st_vol_op, &drop, NULL);
        unlink(info.path);
        goto out;
    }
    *out = info;
    rc = 0;
out:
    close(fd);
    return rc;
}

struct st_names_arg {
    const char *pool;
    char **names; /* malloc'ed, as storage_names_free() frees them */
    size_t n;
};

/* Names of @vols (each freed here) into a new array; *@n counts them.  NULL when none. */
static char **
st_vol_names(virStorageVolPtr *vols, int count, size_t *n)
{
    char **names = count > 0 ? st_xcalloc((size_t)count, sizeof(*names)) : NULL;
    const char *name;
    int i;

    *n = 0;
    for (i = 0; i < count; i++) {
        /* Read from the handle itself: it cannot fail on a valid one. */
        name = virStorageVolGetName(vols[i]);
        if (name)
            names[(*n)++] = st_xstrdup(name);
        virStorageVolFree(vols[i]);
    }
    return names;
}

static int
st_list_volumes_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    struct st_names_arg *a = arg;
    virStorageVolPtr *vols = NULL;
    virStoragePoolPtr p;
    int count, rc = -1;

    /* What an attempt on a connection lost meanwhile left. */
    storage_names_free(a->names, a->n);
    a->names = NULL;
    a->n = 0;
    p = st_pool_lookup(conn, a->pool, err);
    if (!p)
        return -1;
    /* Files put into the directory behind libvirt's back are volumes only after a refresh. */
    if (virStoragePoolRefresh(p, 0) < 0) {
        libvirt_error_set(err, "cannot refresh storage pool '%s'", a->pool);
        goto out;
    }
    count = virStoragePoolListAllVolumes(p, &vols, 0);
    if (count < 0) {
        libvirt_error_set(err, "cannot list the volumes of storage pool '%s'", a->pool);
        goto out;
    }
    a->names = st_vol_names(vols, count, &a->n);
    free(vols);
    rc = 0;
out:
    virStoragePoolFree(p);
    return rc;
}

static int
st_list_volumes(void *self, const char *pool, char ***names, size_t *n, struct st_error *err)
{
    struct st_names_arg arg = {.pool = pool};

    /* Refresh and listing change nothing: safe to run again on a new connection. */
    if (libvirt_conn_run(((struct st_libvirt *)self)->lc, LIBVIRT_OP_READ, "volume list",
                         st_list_volumes_op, &arg, err) < 0) {
        storage_names_free(arg.names, arg.n);
        return -1;
    }
    *names = arg.names;
    *n = arg.n;
    return 0;
}

static void
st_close(void *self)
{
    struct st_libvirt *s = self;

    if (!s)
        return;
    free(s->import_dir);
    free(s);
}

static const struct storage_ops st_libvirt_ops = {
    .ensure_pool = st_ensure_pool,
    .clone_overlay = st_clone_overlay,
    .import = st_import,
    .remove = st_remove,
    .info = st_info,
    .close = st_close,
    .list_volumes = st_list_volumes,
};

/* Keep @dir as a canonical absolute path, made so as text (a relative one against the cwd). */
static int
st_import_dir_set(struct st_libvirt *s, const char *dir, struct st_error *err)
{
    char cwd[PATH_MAX], clean[PATH_MAX];
    ST_AUTOFREE char *abs = NULL;

    if (dir[0] != '/') {
        if (!getcwd(cwd, sizeof(cwd)))
            return st_error_set_native(err, ST_ERR_INVALID, errno,
                                       "cannot make the import directory '%s' absolute: %s", dir,
                                       strerror(errno));
        abs = st_xasprintf("%s/%s", cwd, dir);
    }
    if (!st_path_lexical(abs ? abs : dir, clean))
        return st_error_set(err, ST_ERR_INVALID, "the import directory '%s' is not usable", dir);
    s->import_dir = st_xstrdup(clean);
    return 0;
}

int
storage_libvirt_open(struct libvirt_conn *conn, const struct storage_libvirt_config *cfg,
                     struct storage *out, struct st_error *err)
{
    struct st_libvirt *s;

    if (!conn)
        return st_error_set(err, ST_ERR_INVALID, "the libvirt storage needs a connection");
    s = st_xcalloc(1, sizeof(*s));
    s->lc = conn;
    if (cfg && cfg->import_dir && st_import_dir_set(s, cfg->import_dir, err) < 0) {
        free(s);
        return -1;
    }
    out->ops = &st_libvirt_ops;
    out->self = s;
    return 0;
}
