#!/bin/sh
# install.sh BINARY ROOT: the runtime stage of deploy/image/Dockerfile, also run by tests/deploy.rs
# on the binary the tests use (with TRUSTWATCH_INSTALL_NO_APT=1 and a temporary ROOT).
#
#   ROOT/usr/local/bin/trustwatch        file capability cap_net_raw=ep (the libpcap source)
#   ROOT/usr/local/bin/trustwatch-ebpf   cap_bpf,cap_net_admin,cap_perfmon=ep (the eBPF source)
#   ROOT/opt/trustwatch-check/           trustwatch + loader + libraries, no capability, for
#                                        CloudCore's readiness probe (deploy/components/cloudcore-readiness)
#
# A binary whose file capabilities are "effective" (+ep) only starts when the container's bounding
# set holds all of them (else execve fails with EPERM): hence one copy per capture source, each
# matching its DaemonSet component exactly.
set -eu
bin=$1
root=$2
here=$(dirname "$0")
if [ -z "${TRUSTWATCH_INSTALL_NO_APT:-}" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends libpcap0.8 libcap2-bin ca-certificates >/dev/null
fi
install -D -m 0755 "$bin" "$root/usr/local/bin/trustwatch"
install -D -m 0755 "$bin" "$root/usr/local/bin/trustwatch-ebpf"
setcap cap_net_raw=ep "$root/usr/local/bin/trustwatch"
setcap cap_bpf,cap_net_admin,cap_perfmon=ep "$root/usr/local/bin/trustwatch-ebpf"
sh "$here/bundle.sh" "$bin" "$root/opt/trustwatch-check"
if [ -z "${TRUSTWATCH_INSTALL_NO_APT:-}" ]; then
    apt-get purge -y -qq libcap2-bin >/dev/null
    apt-get autoremove -y -qq >/dev/null
    rm -rf /var/lib/apt/lists/*
    # Nothing in the image may raise privileges but trustwatch's own file capabilities.
    find / -xdev -type f -perm /6000 -exec chmod a-s {} + 2>/dev/null || true
fi
