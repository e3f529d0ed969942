# Sourced by small-room.sh and floor.sh: two network namespaces joined by a veth pair.
#
#   veth_pair NS_NODE NS_CLI IP_NODE IP_CLI   # addresses of one /30
#
# The pair is created inside NS_NODE and one end moved to NS_CLI: neither end ever
# lives in the host's namespace. Needs root (ip netns). The caller deletes both
# namespaces when done.
veth_pair() {
  local ns_node="$1" ns_cli="$2" ip_node="$3" ip_cli="$4"
  ip netns add "$ns_node"
  ip netns add "$ns_cli"
  ip -n "$ns_node" link add vn0 type veth peer name vc0
  ip -n "$ns_node" link set vc0 netns "$ns_cli"
  ip -n "$ns_node" addr add "$ip_node/30" dev vn0
  ip -n "$ns_cli" addr add "$ip_cli/30" dev vc0
  for ns in "$ns_node" "$ns_cli"; do ip -n "$ns" link set lo up; done
  ip -n "$ns_node" link set vn0 up
  ip -n "$ns_cli" link set vc0 up
}
