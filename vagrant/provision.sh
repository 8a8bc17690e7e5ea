#!/usr/bin/env bash
# Provision the stratus Vagrant VM, or check without a VM what can be checked.
#
#   vagrant/provision.sh           inside the VM, as root (Vagrant runs it):
#                                  deps, build, make install, the first admin,
#                                  nginx, and the services under systemd
#   vagrant/provision.sh --check   on a Debian 12 machine, as root, no VM and no
#                                  hypervisor needed: deps, build, make install
#                                  into a temporary DESTDIR and every check of
#                                  the result; prints "ok - ..." or
#                                  "not ok - ...: why" per check, and last
#                                  "provision: N passed, N failed"
#
# --check starts and enables no service and writes nothing under /etc (only
# scripts/deps.sh, when a package is missing, installs it through apt); its
# temporary directory is removed on exit.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$here/.." && pwd)
[ -x "$SRC/scripts/deps.sh" ] || SRC=/stratus
SELF=$here/$(basename "${BASH_SOURCE[0]}")

PREFIX=/usr/local
SYSCONFDIR=/etc
SYSTEMDDIR=/lib/systemd/system
CONF=$SYSCONFDIR/stratus/stratus.conf
STATE=/var/lib/stratus
PORT=8080

mode=provision
case "${1:-}" in
"") ;;
--check) mode=check ;;
-h | --help) sed -n '2,17p' "$0"; exit 0 ;;
*) echo "provision: unknown argument $1 (--check or nothing)" >&2; exit 2 ;;
esac

# The binaries read STRATUS_* variables over their config file: run them
# without any, so the file is the one source (as scripts/run.sh does).
clean_env() {
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(STRATUS_[A-Za-z0-9_]*\)=.*/-u \1/p') "$@"
}

log() { echo "provision: $*" >&2; }

# ---------------------------------------------------------------- provision

provision() {
    local virt i code out

    [ "$(id -u)" -eq 0 ] || { log "run me as root"; exit 1; }
    log "packages (scripts/deps.sh)"
    "$SRC/scripts/deps.sh"
    log "building in $SRC"
    make -C "$SRC" -j"$(nproc)" all
    log "installing under $PREFIX"
    make -C "$SRC" install PREFIX="$PREFIX"

    # QEMU (libvirt-qemu) traverses the state dir to reach the disks.
    install -d -m 0755 "$STATE"
    # The first admin, on the first run only; files made here readable by
    # root alone, as the units' UMask makes them later.
    out=$(umask 026 && clean_env "$PREFIX/bin/stratus-admin" -c "$CONF" bootstrap)
    [ -z "$out" ] || echo "$out"

    ln -sfn ../sites-available/stratus "$SYSCONFDIR/nginx/sites-enabled/stratus"
    nginx -t -q

    systemctl daemon-reload
    # A second provisioning replaces running services by the new binaries.
    systemctl try-restart stratus-api.service stratus-worker.service
    systemctl enable --now libvirtd virtlogd stratus-api.socket stratus-api.service \
        stratus-worker.service
    systemctl enable --now nginx
    systemctl reload-or-restart nginx

    for ((i = 0; i < 60; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://127.0.0.1:$PORT/v1/health" || true)
        [ "$code" = 200 ] && break
        sleep 1
    done
    if [ "$code" != 200 ]; then
        log "GET /v1/health did not answer 200 within 60 s (last: ${code:-none})"
        systemctl --no-pager status stratus-api.service stratus-worker.service nginx >&2 || true
        exit 1
    fi

    virt=$(clean_env "$PREFIX/bin/stratus-api" -c "$CONF" --check-config |
        sed -n 's/^virt_type = //p')
    echo "stratus is up at http://127.0.0.1:$PORT/v1/ (from the host too: port $PORT is forwarded)"
    echo "  admin: admin@localhost, password in $STATE/admin-password:"
    echo "         vagrant ssh -c 'sudo cat $STATE/admin-password'"
    if [ "$virt" = kvm ]; then
        echo "  guests run under KVM (the VM's CPU shows vmx/svm)"
    else
        echo "  guests run under TCG (virt_type qemu): the VM's CPU shows no vmx/svm;"
        echo "  turn on nested virtualization on the host for KVM"
    fi
    echo "  images to import go in $STATE/import; logs: journalctl -u stratus-api -u stratus-worker"
}

# ---------------------------------------------------------------- --check

passed=0
failed=0
tmp=

ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}

not_ok() {
    echo "not ok - $1: $2"
    failed=$((failed + 1))
}

# Show the end of a captured log under a failure, as TAP diagnostics.
diag() {
    [ -s "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/#   /' >&2
    return 0
}

cleanup() {
    [ -n "$tmp" ] && rm -rf "$tmp"
}

# The mode of @1 in octal (e.g. 0755).
mode_of() { stat -c '%04a' "$1"; }

check_file() {
    local path=$1 want=$2 root=$3
    if [ ! -f "$root$path" ]; then
        not_ok "installed $path" "missing"
    elif [ "$(mode_of "$root$path")" != "$want" ]; then
        not_ok "installed $path" "mode $(mode_of "$root$path"), want $want"
    else
        ok "installed $path ($want)"
    fi
}

# Value of `key = value` in config file @2.
conf_value() { sed -n "s/^$1[[:space:]]*=[[:space:]]*//p" "$2" | tail -n1; }

check_install() {
    local root=$1 f left
    for f in stratus-api stratus-worker stratus-admin; do
        check_file "$PREFIX/bin/$f" 0755 "$root"
    done
    for f in stratus-api.socket stratus-api.service stratus-worker.service; do
        check_file "$SYSTEMDDIR/$f" 0644 "$root"
    done
    check_file "$CONF" 0640 "$root"
    check_file "$SYSCONFDIR/nginx/sites-available/stratus" 0644 "$root"
    check_file "$PREFIX/share/doc/stratus/deploy.md" 0644 "$root"
    if [ "$(mode_of "$root$SYSCONFDIR/stratus" 2>/dev/null)" = 0750 ]; then
        ok "installed $SYSCONFDIR/stratus/ (0750)"
    else
        not_ok "installed $SYSCONFDIR/stratus/" "mode $(mode_of "$root$SYSCONFDIR/stratus" 2>&1)"
    fi
    left=$(cd "$root" && grep -l '@[A-Z_]*@' ".$CONF" ".$SYSCONFDIR/nginx/sites-available/stratus" \
        ".$SYSTEMDDIR"/stratus-* 2>/dev/null | sed 's|^\.||' | tr '\n' ' ' || true)
    if [ -z "$left" ]; then
        ok "no @PLACEHOLDER@ left in the installed files"
    else
        not_ok "no @PLACEHOLDER@ left in the installed files" "found in $left"
    fi
    if grep -qx "ExecStart=$PREFIX/bin/stratus-api -c $CONF" "$root$SYSTEMDDIR/stratus-api.service" &&
        grep -qx "ExecStart=$PREFIX/bin/stratus-worker -c $CONF" "$root$SYSTEMDDIR/stratus-worker.service"; then
        ok "units start $PREFIX/bin/stratus-{api,worker} -c $CONF"
    else
        not_ok "units start $PREFIX/bin/stratus-{api,worker} -c $CONF" \
            "ExecStart reads: $(grep -h '^ExecStart=' "$root$SYSTEMDDIR"/stratus-*.service | tr '\n' ' ')"
    fi
}

# The socket path and the body cap must agree between the three files.
check_agree() {
    local root=$1 conf sock unit site body cap
    conf=$root$CONF
    sock=$(conf_value socket "$conf")
    unit=$(sed -n 's/^ListenStream=//p' "$root$SYSTEMDDIR/stratus-api.socket")
    site=$(sed -n 's/^[[:space:]]*server unix:\([^;]*\);.*/\1/p' "$root$SYSCONFDIR/nginx/sites-available/stratus")
    if [ -n "$sock" ] && [ "$sock" = "$unit" ] && [ "$sock" = "$site" ]; then
        ok "one socket path in stratus.conf, stratus-api.socket and the nginx site ($sock)"
    else
        not_ok "one socket path in stratus.conf, stratus-api.socket and the nginx site" \
            "conf '$sock', socket unit '$unit', nginx '$site'"
    fi
    body=$(conf_value max_body_bytes "$conf")
    cap=$(sed -n 's/^[[:space:]]*client_max_body_size[[:space:]]*\([0-9]*\);.*/\1/p' \
        "$root$SYSCONFDIR/nginx/sites-available/stratus")
    if [ -n "$body" ] && [ "$body" = "$cap" ]; then
        ok "max_body_bytes equals nginx's client_max_body_size ($body)"
    else
        not_ok "max_body_bytes equals nginx's client_max_body_size" "conf '$body', nginx '$cap'"
    fi
    if getent group "$(sed -n 's/^SocketGroup=//p' "$root$SYSTEMDDIR/stratus-api.socket")" >/dev/null; then
        ok "the socket's group exists ($(sed -n 's/^SocketGroup=//p' "$root$SYSTEMDDIR/stratus-api.socket"))"
    else
        not_ok "the socket's group exists" "no group $(sed -n 's/^SocketGroup=//p' "$root$SYSTEMDDIR/stratus-api.socket")"
    fi
}

check_config() {
    local root=$1 out what
    what="the installed stratus.conf passes stratus-api --check-config"
    if out=$(clean_env "$root$PREFIX/bin/stratus-api" -c "$root$CONF" --check-config 2>&1) &&
        grep -Eqx "database = (sqlite://)?$STATE/stratus.db" <<<"$out" &&
        grep -qx "state_dir = $STATE" <<<"$out" && grep -qx "socket = /run/stratus/api.sock" <<<"$out"; then
        ok "$what"
    elif [ -n "$(grep -E '^(database|state_dir|socket) = ' <<<"$out")" ]; then
        not_ok "$what" "it resolves $(grep -E '^(database|state_dir|socket) = ' <<<"$out" | tr '\n' ' ')"
    else
        not_ok "$what" "$(tail -n1 <<<"$out")"
    fi
    what="its commented postgresql example is a valid database value"
    sed 's/^#[[:space:]]*\(database = postgresql:\)/\1/' "$root$CONF" >"$tmp/pg.conf"
    if ! grep -q '^database = postgresql:' "$tmp/pg.conf"; then
        not_ok "$what" "no '# database = postgresql://...' line"
    elif out=$(clean_env "$root$PREFIX/bin/stratus-api" -c "$tmp/pg.conf" --check-config 2>&1) &&
        grep -q '^database = postgresql://' <<<"$out"; then
        ok "$what"
    else
        not_ok "$what" "$(tail -n1 <<<"$out")"
    fi
}

# A second install keeps an edited stratus.conf; uninstall keeps it too.
check_reinstall() {
    local root=$tmp/root2 left
    if ! make -C "$SRC" -s install DESTDIR="$root" PREFIX="$PREFIX" >"$tmp/log/install2.log" 2>&1; then
        not_ok "make install keeps an edited stratus.conf" "make install failed"
        diag "$tmp/log/install2.log"
        return
    fi
    echo "# edited by the operator" >>"$root$CONF"
    make -C "$SRC" -s install DESTDIR="$root" PREFIX="$PREFIX" >>"$tmp/log/install2.log" 2>&1 || true
    if ! grep -q '^# edited by the operator$' "$root$CONF"; then
        not_ok "make install keeps an edited stratus.conf" "it was replaced"
    elif ! [ -f "$root$CONF.dist" ] || grep -q 'edited by the operator' "$root$CONF.dist"; then
        not_ok "make install keeps an edited stratus.conf" "no new stratus.conf.dist beside it"
    elif [ -e "$root$SYSCONFDIR/nginx/sites-available/stratus.dist" ]; then
        not_ok "make install keeps an edited stratus.conf" "an unchanged nginx site got a .dist"
    else
        ok "make install keeps an edited stratus.conf and puts the new one in stratus.conf.dist"
    fi
    # Enabled as provisioning does: uninstall must not leave a dangling link.
    mkdir -p "$root$SYSCONFDIR/nginx/sites-enabled"
    ln -sfn ../sites-available/stratus "$root$SYSCONFDIR/nginx/sites-enabled/stratus"
    if ! make -C "$SRC" -s uninstall DESTDIR="$root" PREFIX="$PREFIX" >"$tmp/log/uninstall.log" 2>&1; then
        not_ok "make uninstall" "it failed"
        diag "$tmp/log/uninstall.log"
        return
    fi
    left=$(cd "$root" && find . ! -type d | sed 's|^\.||' | sort | tr '\n' ' ')
    if [ "$left" = "$CONF " ]; then
        ok "make uninstall removes everything but the edited stratus.conf"
    else
        not_ok "make uninstall removes everything but the edited stratus.conf" "left: ${left:-nothing}"
    fi
}

check_units() {
    local root=$1 what out u
    what="systemd-analyze verify of the installed units"
    if ! command -v systemd-analyze >/dev/null; then
        ok "$what # SKIP systemd-analyze is not installed"
        return
    fi
    # The units name $PREFIX/bin binaries, which are only under the DESTDIR
    # here: verify copies that name those instead, which systemd-analyze
    # can check for being executable.
    mkdir -p "$tmp/units"
    for u in stratus-api.socket stratus-api.service stratus-worker.service; do
        sed "s|^\(Exec[A-Za-z]*=\)$PREFIX/bin/|\1$root$PREFIX/bin/|" "$root$SYSTEMDDIR/$u" >"$tmp/units/$u"
    done
    if out=$(cd "$tmp/units" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no \
        stratus-api.socket stratus-api.service stratus-worker.service 2>&1) &&
        ! grep -q 'stratus' <<<"$out"; then
        ok "$what"
    else
        not_ok "$what" "$(grep -m1 stratus <<<"$out" || tail -n1 <<<"$out")"
        printf '%s\n' "$out" >"$tmp/log/verify.log"
        diag "$tmp/log/verify.log"
    fi
}

check_nginx() {
    local root=$1 what=$2 d=$tmp/nginx
    mkdir -p "$d"
    # The site as installed, with its logs moved here.
    sed "s|/var/log/nginx/|$d/|g" "$root$SYSCONFDIR/nginx/sites-available/stratus" >"$d/site.conf"
    cat >"$d/nginx.conf" <<CONF
pid $d/nginx.pid;
error_log $d/error.log;
events {
    worker_connections 64;
}
http {
    access_log $d/access.log;
    client_body_temp_path $d/body;
    fastcgi_temp_path $d/fastcgi;
    proxy_temp_path $d/proxy;
    scgi_temp_path $d/scgi;
    uwsgi_temp_path $d/uwsgi;
    include $d/site.conf;
}
CONF
    if ! command -v nginx >/dev/null; then
        not_ok "$what" "nginx is not installed"
    elif nginx -t -q -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$tmp/log/nginx.log" 2>&1; then
        ok "$what"
    else
        not_ok "$what" "$(tail -n1 "$tmp/log/nginx.log")"
        diag "$tmp/log/nginx.log"
    fi
}

check_bootstrap() {
    local root=$1 state=$tmp/state conf=$tmp/state.conf out what pw
    what="stratus-admin bootstrap of a fresh state dir"
    mkdir -p "$state"
    chmod 0755 "$state"
    sed "s|$STATE|$state|g" "$root$CONF" >"$conf"
    if ! out=$(umask 026 && clean_env "$root$PREFIX/bin/stratus-admin" -c "$conf" bootstrap 2>&1); then
        not_ok "$what" "$(tail -n1 <<<"$out")"
        return
    fi
    pw=$(cat "$state/admin-password" 2>/dev/null || true)
    if ! grep -q "created admin 'admin@localhost'" <<<"$out"; then
        not_ok "$what" "it said: $(tail -n1 <<<"$out")"
    elif [ "${#pw}" -lt 20 ] || [ "$(mode_of "$state/admin-password")" != 0600 ]; then
        not_ok "$what" "admin-password: $(stat -c '%a %s bytes' "$state/admin-password" 2>&1)"
    elif [ "$(mode_of "$state/token-keys" 2>/dev/null)" != 0600 ]; then
        not_ok "$what" "token-keys: $(stat -c '%a' "$state/token-keys" 2>&1)"
    elif [ "$(mode_of "$state/stratus.db" 2>/dev/null)" != 0640 ]; then
        not_ok "$what" "stratus.db: $(stat -c '%a' "$state/stratus.db" 2>&1), want 640"
    else
        ok "$what (admin-password and token-keys 0600, stratus.db 0640)"
    fi
    what="a second bootstrap leaves the admin alone"
    if out=$(clean_env "$root$PREFIX/bin/stratus-admin" -c "$conf" bootstrap 2>&1) && [ -z "$out" ] &&
        [ "$(cat "$state/admin-password" 2>/dev/null)" = "$pw" ]; then
        ok "$what"
    else
        not_ok "$what" "${out:-the password file changed}"
    fi
    what="the installed stratus-admin reads the new database (audit verify)"
    if out=$(clean_env "$root$PREFIX/bin/stratus-admin" -c "$conf" audit verify 2>&1) &&
        grep -q 'chain intact' <<<"$out"; then
        ok "$what"
    else
        not_ok "$what" "$(tail -n1 <<<"$out")"
    fi
}

# Settings of the Vagrantfile, read by evaluating it against a stand-in for
# Vagrant's configuration object that records what is set and called.
VAGRANT_PROBE='
$set = {}
$calls = []
class Probe
  def initialize(path)
    @path = path
  end

  def method_missing(name, *args, **kw, &blk)
    key = "#{@path}.#{name}"
    if name.to_s.end_with?("=")
      $set[key.chomp("=")] = args.first
      return args.first
    end
    $calls << [key, args, kw]
    blk.call(Probe.new("#{key}(#{args.first})"), Probe.new("#{key}(#{args.first}).override")) if blk
    Probe.new(key)
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    yield Probe.new("config")
  end
end

load ARGV[0]

bad = []
want = {
  "config.vm.box" => "debian/bookworm64",
  "config.vm.provider(libvirt).nested" => true,
  "config.vm.provider(libvirt).cpu_mode" => "host-passthrough",
  "config.vm.provider(libvirt).memory" => 4096,
  "config.vm.provider(libvirt).cpus" => 2,
  "config.vm.provider(virtualbox).memory" => 4096,
  "config.vm.provider(virtualbox).cpus" => 2,
}
want.each { |k, v| bad << "#{k} is #{$set[k].inspect}, want #{v.inspect}" unless $set[k] == v }
call = ->(key) { $calls.select { |c| c[0] == key } }
unless call.("config.vm.provider(virtualbox).customize").any? { |c| c[1] == [["modifyvm", :id, "--nested-hw-virt", "on"]] }
  bad << "VirtualBox: no --nested-hw-virt on"
end
unless call.("config.vm.network").any? { |c| c[1] == ["forwarded_port"] && c[2][:guest] == 8080 && c[2][:host] == 8080 }
  bad << "no forwarded port 8080 -> 8080"
end
unless call.("config.vm.synced_folder").any? { |c| c[1] == ["..", "/stratus"] && c[2][:type] == "rsync" }
  bad << "the project is not synced to /stratus with rsync"
end
unless call.("config.vm.provision").any? { |c| c[1] == ["shell"] && (c[2][:path].to_s + c[2][:inline].to_s).include?("provision.sh") }
  bad << "no shell provisioner running provision.sh"
end
if bad.empty?
  puts "settings as expected"
else
  puts bad.join("; ")
  exit 1
end
'

check_vagrantfile() {
    local vf=$SRC/vagrant/Vagrantfile out what
    what="Vagrantfile syntax"
    if command -v vagrant >/dev/null && vagrant --version >/dev/null 2>&1; then
        what="$what (vagrant validate)"
        if out=$(cd "$SRC/vagrant" && vagrant validate 2>&1); then
            ok "$what"
        else
            not_ok "$what" "$(tail -n1 <<<"$out")"
        fi
    elif command -v ruby >/dev/null; then
        what="$what (ruby -c; vagrant is not installed)"
        if out=$(ruby -c "$vf" 2>&1); then
            ok "$what"
        else
            not_ok "$what" "$(tail -n1 <<<"$out")"
        fi
    else
        not_ok "$what" "neither vagrant nor ruby is installed (scripts/deps.sh installs ruby)"
    fi
    what="Vagrantfile settings (box, nested virtualization, 4096 MiB/2 CPUs, port 8080, /stratus, provision.sh)"
    if ! command -v ruby >/dev/null; then
        not_ok "$what" "ruby is not installed"
    elif out=$(ruby -e "$VAGRANT_PROBE" "$vf" 2>&1); then
        ok "$what"
    else
        not_ok "$what" "$(tail -n1 <<<"$out")"
    fi
}

check() {
    local root installed=0
    tmp=$(mktemp -d /tmp/stratus-provision.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$tmp/log"
    root=$tmp/root

    if [ "$(id -u)" -eq 0 ]; then
        ok "running as root"
    else
        not_ok "running as root" "uid $(id -u): deps, nginx -t and the modes need root"
    fi
    if "$SRC/scripts/deps.sh" >"$tmp/log/deps.log" 2>&1; then
        ok "packages installed (scripts/deps.sh)"
    else
        not_ok "packages installed (scripts/deps.sh)" "$(tail -n1 "$tmp/log/deps.log")"
        diag "$tmp/log/deps.log"
    fi
    if make -C "$SRC" -j"$(nproc)" all >"$tmp/log/build.log" 2>&1; then
        ok "build (make all)"
    else
        not_ok "build (make all)" "see the lines below"
        diag "$tmp/log/build.log"
    fi
    if make -C "$SRC" install DESTDIR="$root" PREFIX="$PREFIX" >"$tmp/log/install.log" 2>&1; then
        ok "make install DESTDIR=<tmp> PREFIX=$PREFIX"
        installed=1
    else
        not_ok "make install DESTDIR=<tmp> PREFIX=$PREFIX" "$(tail -n1 "$tmp/log/install.log")"
        diag "$tmp/log/install.log"
    fi

    if [ "$installed" = 1 ]; then
        check_install "$root"
        check_agree "$root"
        check_config "$root"
        check_reinstall
        check_units "$root"
        check_nginx "$root" "nginx -t on a throwaway nginx.conf including the installed site"
        check_bootstrap "$root"
    else
        not_ok "checks of the installed files" "nothing was installed"
    fi
    check_vagrantfile
    if bash -n "$SELF" 2>"$tmp/log/bash-n.log"; then
        ok "bash -n vagrant/provision.sh"
    else
        not_ok "bash -n vagrant/provision.sh" "$(tail -n1 "$tmp/log/bash-n.log")"
    fi

    echo "provision: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

if [ "$mode" = check ]; then
    check
else
    provision
fi
