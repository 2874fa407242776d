#!/usr/bin/env bash
# Captures the netlink messages iproute2's `tc` sends for the commands bwcap
# also sends, and the kernel's replies to `tc -s class show` and `tc qdisc
# show`, into tests/data/tc/*.bin (raw netlink messages, as on the socket).
# The unit tests in src/tc/ compare bwcap's encoder with these bytes and run
# its decoder on the replies. Run as root on a machine with iproute2:
#   bwcap/tests/data/capture-tc.sh
# It makes a network namespace of its own and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")"
out=tc
ns="bwcap-capture-$$"
peer="bwcap-capture-peer-$$"
mkdir -p "$out"
ip netns add "$ns"
ip netns add "$peer"
trap 'ip netns del "$ns"; ip netns del "$peer"' EXIT
ip -n "$ns" link add v0 type veth peer name v1 netns "$peer"
ip -n "$ns" link set v0 up
ip -n "$peer" link set v1 up

# strace's hex dump of the data a syscall moved -> the raw bytes of every
# netlink message of type $2 (decimal; 0 = all) in it.
extract() {
    perl -e '
        my ($want) = @ARGV; my $bytes = ""; my @bufs;
        while (<STDIN>) {
            if (/^(sendmsg|recvmsg)\(/) { push @bufs, $bytes if length $bytes; $bytes = ""; next }
            next unless /^ \| [0-9a-f]{5}  (.{49})/;
            my $hex = join "", ($1 =~ /([0-9a-f]{2})/g); $bytes .= pack("H*", $hex);
        }
        push @bufs, $bytes if length $bytes;
        binmode STDOUT;
        for my $b (@bufs) {
            my $off = 0;
            while ($off + 16 <= length $b) {
                my ($len, $type) = unpack("V v", substr($b, $off, 6));
                last if $len < 16 || $off + $len > length $b;
                print substr($b, $off, $len) if $want == 0 || $type == $want;
                $off += ($len + 3) & ~3;
            }
        }' "$2"
}

# capture NAME TYPE -- tc ARGS...: the messages of TYPE that `tc` sent (or, for
# a show command, received).
capture() {
    local name=$1 type=$2 dir=$3; shift 3
    ip netns exec "$ns" strace -qq -e trace=sendmsg,recvmsg -e "$dir=3" -s 0 "$@" 2>&1 >/dev/null \
        | grep -v '^Warning\|^Error' | extract "$name" "$type" > "$out/$name.bin"
    echo "$name: $(stat -c %s "$out/$name.bin") bytes  ($*)"
}

RTM_NEWQDISC=36 RTM_DELQDISC=37 RTM_NEWTCLASS=40 RTM_DELTCLASS=41
capture qdisc_add_htb_root $RTM_NEWQDISC write tc qdisc add dev v0 root handle 1: htb default 3
capture class_add_node_cap $RTM_NEWTCLASS write tc class add dev v0 parent 1: classid 1:1 htb rate 100mbit ceil 100mbit burst 125000 cburst 125000 quantum 15140
capture class_add_sliver $RTM_NEWTCLASS write tc class add dev v0 parent 1:1 classid 1:10 htb rate 5kbit ceil 10mbit burst 3028 cburst 12500 quantum 1514
capture class_add_rate64 $RTM_NEWTCLASS write tc class add dev v0 parent 1:1 classid 1:11 htb rate 40gbit ceil 40gbit burst 50000000 cburst 50000000 quantum 1514
capture class_add_icmp $RTM_NEWTCLASS write tc class add dev v0 parent 1:1 classid 1:4 htb rate 121120bit ceil 121120bit burst 15140 cburst 15140 mpu 1514 quantum 1514
capture class_change_sliver $RTM_NEWTCLASS write tc class change dev v0 parent 1:1 classid 1:10 htb rate 5kbit ceil 20mbit burst 3028 cburst 25000 quantum 1514
capture qdisc_add_pfifo_leaf $RTM_NEWQDISC write tc qdisc add dev v0 parent 1:10 handle 10: pfifo limit 1000
# fq_codel may be missing from the kernel (tc then fails after sending).
capture qdisc_add_fq_codel_leaf $RTM_NEWQDISC write tc qdisc add dev v0 parent 1:11 handle 11: fq_codel limit 1000 flows 64 || true
# Some traffic through the default class, so that the statistics in the
# dumps are not all zero.
ip netns exec "$ns" tc class add dev v0 parent 1:1 classid 1:3 htb rate 1mbit ceil 100mbit
ip -n "$ns" addr add 192.0.2.1/24 dev v0
ip -n "$peer" addr add 192.0.2.2/24 dev v1
ip netns exec "$ns" bash -c 'exec 3<>/dev/udp/192.0.2.2/9; for i in 1 2 3; do echo hello >&3 || true; sleep 0.1; done' 2>/dev/null
capture class_dump $RTM_NEWTCLASS read tc -s class show dev v0
capture qdisc_dump $RTM_NEWQDISC read tc -s qdisc show dev v0
capture class_del_sliver $RTM_DELTCLASS write tc class del dev v0 classid 1:11
capture qdisc_del_root $RTM_DELQDISC write tc qdisc del dev v0 root
