#include "contract/support/rows.h"

#include <stdio.h>
#include <string.h>

#include "util/ids.h"

struct vm
make_vm(const char *owner, const char *name, const char *image_id, int64_t created_at)
{
    struct vm vm;

    memset(&vm, 0, sizeof(vm));
    st_uuid_generate(vm.id);
    strcpy(vm.owner_id, owner);
    snprintf(vm.name, sizeof(vm.name), "%s", name);
    vm.status = VM_STATUS_CREATING;
    vm.step = VM_STEP_ROW;
    vm.vcpus = 2;
    vm.memory_mib = 2048;
    vm.disk_gib = 10;
    strcpy(vm.image_id, image_id);
    vm.created_at = created_at;
    vm.updated_at = created_at;
    vm.revision = 1;
    return vm;
}

struct image
make_image(const char *owner, const char *name, int64_t created_at)
{
    struct image image;

    memset(&image, 0, sizeof(image));
    st_uuid_generate(image.id);
    strcpy(image.owner_id, owner);
    snprintf(image.name, sizeof(image.name), "%s", name);
    image.format = IMAGE_FORMAT_RAW;
    image.status = IMAGE_STATUS_ACTIVE;
    image.size_bytes = 5ULL << 32; /* above 32 bits on purpose */
    image.virtual_size_bytes = 10ULL << 32;
    image.created_at = created_at;
    image.updated_at = created_at + 1;
    image.revision = 1;
    return image;
}

struct flavor
make_flavor(const char *owner, const char *name, int64_t created_at)
{
    struct flavor flavor;

    memset(&flavor, 0, sizeof(flavor));
    st_uuid_generate(flavor.id);
    strcpy(flavor.owner_id, owner);
    snprintf(flavor.name, sizeof(flavor.name), "%s", name);
    flavor.vcpus = 4;
    flavor.memory_mib = 8192;
    flavor.disk_gib = 40;
    flavor.created_at = created_at;
    flavor.revision = 1;
    return flavor;
}

struct user
make_user(const char *id, const char *email, int64_t created_at)
{
    struct user user;

    memset(&user, 0, sizeof(user));
    snprintf(user.id, sizeof(user.id), "%s", id ? id : "");
    if (!id)
        st_uuid_generate(user.id);
    snprintf(user.email, sizeof(user.email), "%s", email);
    strcpy(user.password_hash, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g");
    strcpy(user.nickname, "ada");
    user.status = USER_STATUS_ACTIVE;
    user.roles = USER_ROLE_USER;
    user.quota.max_vms = -1;
    user.quota.max_vcpus = -1;
    user.quota.max_memory_mib = -1;
    user.quota.max_disk_gib = -1;
    user.created_at = created_at;
    user.updated_at = created_at;
    user.revision = 1;
    return user;
}

struct api_key
make_key(const char *user_id, const char *name, const char *prefix, int64_t created_at)
{
    struct api_key key;

    memset(&key, 0, sizeof(key));
    st_uuid_generate(key.id);
    strcpy(key.user_id, user_id);
    snprintf(key.name, sizeof(key.name), "%s", name);
    snprintf(key.prefix, sizeof(key.prefix), "%s", prefix);
    memset(key.hash, 'f', ST_HASH_HEX_BUF - 1);
    key.created_at = created_at;
    return key;
}
