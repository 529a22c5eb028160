/// Kinds of exported metrics.
public enum MetricKind: String, Sendable, Hashable {
  case counter, gauge, histogram
}

/// One exported metric: name, kind, help text and label names (histograms also their buckets).
public struct MetricDefinition: Sendable, Hashable {
  public var name: String
  public var kind: MetricKind
  public var help: String
  public var labels: [String]
  public var buckets: [Double]
  public init(_ name: String, _ kind: MetricKind, _ help: String, labels: [String] = [], buckets: [Double] = []) {
    self.name = name
    self.kind = kind
    self.help = help
    self.labels = labels
    self.buckets = buckets
  }
}

/// The metrics hostnat's processes export, modelled on Cloud NAT's
/// (`compute.googleapis.com/nat/*`) where one exists. Names are prefixed `hostnat_`; counters end
/// in `_total`. Labels: `vm` (VM id), `gateway` (NAT gateway name), `reason` (see below), `host`.
///
/// Agent (per host):
/// - `hostnat_agent_sent_packets_total`, `_sent_bytes_total` {vm, gateway}: to the Internet after
///   NAT (Cloud NAT sent_packets_count, sent_bytes_count).
/// - `hostnat_agent_received_packets_total`, `_received_bytes_total` {vm, gateway}: from the
///   Internet, translated back (received_packets_count, received_bytes_count).
/// - `hostnat_agent_new_connections_total`, `_closed_connections_total` {vm, gateway} and gauge
///   `hostnat_agent_open_connections` {vm, gateway} (new/closed_connections_count, open_connections).
/// - `hostnat_agent_allocated_ports` {vm, gateway}: ports in the VM's blocks (allocated_ports).
/// - `hostnat_agent_ports_in_use` {vm, gateway}: distinct NAT IP:ports held by the VM's flows.
/// - `hostnat_agent_port_usage` {vm, gateway}: the most connections from the VM to one
///   destination IP:port:protocol (port_usage; compare with the ports per VM).
/// - `hostnat_agent_dropped_sent_packets_total` {vm, gateway, reason}: allocation failures,
///   reason OUT_OF_RESOURCES | ENDPOINT_INDEPENDENCE_CONFLICT | FLOW_TABLE_FULL (dropped_sent_packets_count).
/// - `hostnat_agent_nat_allocation_failed` {vm, gateway}: 1 while the VM has allocation failures
///   in the last interval (nat_allocation_failed).
/// - `hostnat_agent_dropped_packets_total` {reason}: every drop on the host by reason, the
///   engine's (`DropReason.cloudNATName`: MALFORMED, UNSUPPORTED_PROTOCOL, FRAGMENT,
///   NO_NAT_CONFIGURED, FILTERED_INBOUND, ENDPOINT_INDEPENDENCE_CONFLICT, OUT_OF_RESOURCES,
///   FLOW_TABLE_FULL, UNMATCHED_ICMP_ERROR) and the packet loop's (NOT_CONFIGURED,
///   MALFORMED_UNDERLAY, UNKNOWN_VNI, UNKNOWN_VM, NO_EDGE, NO_FABRIC, SEND_ERROR).
/// - `hostnat_agent_flows`, `hostnat_agent_flow_table_capacity`: flow table occupancy.
/// - `hostnat_agent_config_version_applied`, `hostnat_agent_controller_connected` (0/1),
///   `hostnat_agent_seconds_since_last_config`.
/// - `hostnat_agent_log_entries_written_total`, `hostnat_agent_log_entries_skipped_total`: the NAT
///   log and its rate limit.
///
/// Controller: `hostnat_controller_connected_hosts`; `hostnat_controller_config_versions_pushed_total`,
/// `_acked_total`, `_nacked_total` {host}; histogram `hostnat_controller_push_to_ack_seconds`;
/// `hostnat_controller_admin_requests_total` {method, result}; ownership safety:
/// `hostnat_controller_epoch`, `hostnat_controller_conflicting_blocks`,
/// `hostnat_controller_quarantined_blocks`, `hostnat_controller_ignored_acks_total`,
/// `hostnat_controller_refused_hellos_total`, `hostnat_controller_refused_messages_total`.
///
/// Edge: `hostnat_edge_received_packets_total`; `hostnat_edge_routed_packets_total` {host};
/// `hostnat_edge_hairpinned_packets_total`; `hostnat_edge_dropped_unowned_packets_total` (to a NAT
/// IP:port no host owns); `hostnat_edge_malformed_packets_total`.
public enum MetricCatalog {
  public enum Role: String, Sendable, Hashable, CaseIterable { case agent, controller, edge }

  static let vmLabels = ["vm", "gateway"]

  /// The packet loop's drop reasons beside the engine's `DropReason`s.
  public static let loopDropReasons = ["NOT_CONFIGURED", "MALFORMED_UNDERLAY", "UNKNOWN_VNI", "UNKNOWN_VM", "NO_EDGE", "NO_FABRIC", "SEND_ERROR"]

  public static let agent: [MetricDefinition] = [
    .init("hostnat_agent_sent_packets_total", .counter, "Packets sent to the Internet after NAT.", labels: vmLabels),
    .init("hostnat_agent_sent_bytes_total", .counter, "Bytes sent to the Internet after NAT.", labels: vmLabels),
    .init("hostnat_agent_received_packets_total", .counter, "Packets received from the Internet and translated back.", labels: vmLabels),
    .init("hostnat_agent_received_bytes_total", .counter, "Bytes received from the Internet and translated back.", labels: vmLabels),
    .init("hostnat_agent_new_connections_total", .counter, "Connections (flows) created.", labels: vmLabels),
    .init("hostnat_agent_closed_connections_total", .counter, "Connections (flows) ended.", labels: vmLabels),
    .init("hostnat_agent_open_connections", .gauge, "Connections (flows) open now.", labels: vmLabels),
    .init("hostnat_agent_allocated_ports", .gauge, "NAT ports allocated to the VM.", labels: vmLabels),
    .init("hostnat_agent_ports_in_use", .gauge, "NAT IP:ports held by the VM's flows.", labels: vmLabels),
    .init("hostnat_agent_port_usage", .gauge, "Most connections from the VM to one destination IP:port:protocol.", labels: vmLabels),
    .init("hostnat_agent_dropped_sent_packets_total", .counter, "Outbound packets dropped because no NAT port could be allocated.", labels: vmLabels + ["reason"]),
    .init("hostnat_agent_nat_allocation_failed", .gauge, "1 if the VM had NAT allocation failures in the last interval.", labels: vmLabels),
    .init("hostnat_agent_dropped_packets_total", .counter, "Packets dropped on the host, by reason.", labels: ["reason"]),
    .init("hostnat_agent_private_google_access_packets_total", .counter, "Packets to or from the Google APIs ranges, untranslated (Private Google Access).", labels: ["direction"]),
    .init("hostnat_agent_vpc_packets_total", .counter, "VM-to-VM packets sent into or accepted from the VPC fabric, untranslated.", labels: ["direction"]),
    .init("hostnat_agent_flows", .gauge, "Flows in the flow table."),
    .init("hostnat_agent_flow_table_capacity", .gauge, "Capacity of the flow table."),
    .init("hostnat_agent_config_version_applied", .gauge, "Version of the config in force (0 before the first)."),
    .init("hostnat_agent_controller_connected", .gauge, "1 while the control stream to the controller is up."),
    .init("hostnat_agent_seconds_since_last_config", .gauge, "Seconds since a config was last applied."),
    .init("hostnat_agent_log_entries_written_total", .counter, "NAT log entries written."),
    .init("hostnat_agent_log_entries_skipped_total", .counter, "NAT log entries skipped by the rate limit."),
  ]

  public static let controller: [MetricDefinition] = [
    .init("hostnat_controller_connected_hosts", .gauge, "Hosts with an open control stream."),
    .init("hostnat_controller_config_versions_pushed_total", .counter, "Config versions pushed.", labels: ["host"]),
    .init("hostnat_controller_config_versions_acked_total", .counter, "Config versions acknowledged (ACK).", labels: ["host"]),
    .init("hostnat_controller_config_versions_nacked_total", .counter, "Config versions rejected (NACK).", labels: ["host"]),
    .init("hostnat_controller_push_to_ack_seconds", .histogram, "Time from pushing a config version to its ACK.",
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
    .init("hostnat_controller_admin_requests_total", .counter, "Admin API requests, by method and result.", labels: ["method", "result"]),
    .init("hostnat_controller_epoch", .gauge, "The controller's epoch (control.proto rule 1)."),
    .init("hostnat_controller_conflicting_blocks", .gauge, "Blocks a host holds that the store gives to another host (rule 9)."),
    .init("hostnat_controller_quarantined_blocks", .gauge, "Blocks waiting in quarantine for their old host (rule 5)."),
    .init("hostnat_controller_ignored_acks_total", .counter, "ACKs and NACKs with no such nonce in flight on the stream (rule 11)."),
    .init("hostnat_controller_refused_hellos_total", .counter, "Hellos refused: another boot of the host id was connected (rule 12)."),
    .init("hostnat_controller_refused_messages_total", .counter, "Control messages refused for out-of-range values (rule 14)."),
  ]

  public static let edge: [MetricDefinition] = [
    .init("hostnat_edge_received_packets_total", .counter, "Datagrams received from agents."),
    .init("hostnat_edge_routed_packets_total", .counter, "Packets routed to an agent.", labels: ["host"]),
    .init("hostnat_edge_hairpinned_packets_total", .counter, "Packets between two NAT IP:ports sent straight to the owner."),
    .init("hostnat_edge_dropped_unowned_packets_total", .counter, "Packets to a NAT IP:port no host owns."),
    .init("hostnat_edge_dropped_not_owner_packets_total", .counter, "Packets from a host whose source NAT IP:port it does not own (NOT_OWNER, rule 13)."),
    .init("hostnat_edge_ownership_recorder_overflow_total", .counter, "Packets the wire ownership recorder could not record (limits)."),
    .init("hostnat_edge_malformed_packets_total", .counter, "Datagrams that are not Geneve with inner IPv4."),
    .init("hostnat_edge_vpc_packets_total", .counter, "VM-to-VM packets the VPC fabric carried to their destination's host (routed) or dropped for want of an owner (unrouted).", labels: ["result"]),
  ]

  public static func definitions(for role: Role) -> [MetricDefinition] {
    switch role {
    case .agent: agent
    case .controller: controller
    case .edge: edge
    }
  }

  public static let all: [MetricDefinition] = agent + controller + edge

  /// The metric name list, one per line: `NAME KIND {labels} HELP`, for docs and `--help` output.
  public static func renderNameList(_ roles: [Role] = Role.allCases) -> String {
    var out = ""
    for role in roles {
      out += "# \(role.rawValue)\n"
      for d in definitions(for: role) {
        let labels = d.labels.isEmpty ? "" : " {\(d.labels.joined(separator: ","))}"
        out += "\(d.name) \(d.kind.rawValue)\(labels)  \(d.help)\n"
      }
    }
    return out
  }
}
