import HostnatAddressing
public import HostnatDataplane
internal import HostnatEngine
public import HostnatMetrics

// The registry's updates that read the data plane's counters: kept here so that HostnatMetrics
// (which the controller links) never depends on the data plane or the engine.
extension TelemetryRegistry {
  /// Sets the agent's metrics that a data plane snapshot carries: per-VM packets, bytes, new
  /// connections and allocation failures; drops by reason; flows; config version. `gateways`
  /// maps VM id to gateway name (label `gateway`). Ports, open connections and the controller
  /// gauges are the caller's to set.
  public func update(agent stats: AgentDataplaneStats, gateways: [String: String]) {
    var allocDrops: [String: UInt64] = [:]
    for (vm, s) in stats.vms {
      let labels = [("vm", vm), ("gateway", gateways[vm] ?? "")]
      counter("hostnat_agent_sent_packets_total", labels: labels).set(s.packetsOut)
      counter("hostnat_agent_sent_bytes_total", labels: labels).set(s.bytesOut)
      counter("hostnat_agent_received_packets_total", labels: labels).set(s.packetsIn)
      counter("hostnat_agent_received_bytes_total", labels: labels).set(s.bytesIn)
      counter("hostnat_agent_new_connections_total", labels: labels).set(s.newFlows)
      var failed = false
      for (key, reason) in [("outOfResources", DropReason.outOfResources), ("endpointIndependenceConflict", .endpointIndependenceConflict), ("flowTableFull", .flowTableFull)] {
        let n = s.drops[key] ?? 0
        allocDrops[reason.cloudNATName, default: 0] += n
        if counter("hostnat_agent_dropped_sent_packets_total", labels: labels + [("reason", reason.cloudNATName)]).set(n) > 0 { failed = true }
      }
      gauge("hostnat_agent_nat_allocation_failed", labels: labels).set(failed)
    }
    let g = stats.global
    let l = stats.loop
    let byReason: [(String, UInt64)] = [
      (DropReason.malformed.cloudNATName, g.malformed),
      (DropReason.unsupportedProtocol.cloudNATName, g.unsupportedProtocol),
      (DropReason.fragment.cloudNATName, g.fragments),
      (DropReason.noNATConfigured.cloudNATName, g.noNATConfigured),
      (DropReason.filteredInbound.cloudNATName, g.filteredInbound),
      (DropReason.unmatchedICMPError.cloudNATName, g.unmatchedICMPError),
      (DropReason.firewallDenied.cloudNATName, g.firewallDeniedEgress + g.firewallDeniedIngress),
      (DropReason.routedToNextHop.cloudNATName, g.routedToNextHop),
      ("NOT_CONFIGURED", l.notConfigured), ("MALFORMED_UNDERLAY", l.malformedUnderlay), ("UNKNOWN_VNI", l.unknownVNI),
      ("UNKNOWN_VM", l.unknownVM), ("NO_EDGE", l.noEdge), ("NO_FABRIC", l.noFabric), ("SEND_ERROR", l.sendErrors),
    ] + [DropReason.outOfResources, .endpointIndependenceConflict, .flowTableFull].map { ($0.cloudNATName, allocDrops[$0.cloudNATName] ?? 0) }
    for (reason, n) in byReason {
      counter("hostnat_agent_dropped_packets_total", labels: [("reason", reason)]).set(n)
    }
    counter("hostnat_agent_private_google_access_packets_total", labels: [("direction", "out")]).set(g.privateGoogleAccessOut)
    counter("hostnat_agent_private_google_access_packets_total", labels: [("direction", "in")]).set(g.privateGoogleAccessIn)
    counter("hostnat_agent_vpc_packets_total", labels: [("direction", "out")]).set(g.vpcOut)
    counter("hostnat_agent_vpc_packets_total", labels: [("direction", "in")]).set(g.vpcIn)
    gauge("hostnat_agent_flows").set(stats.flows)
    gauge("hostnat_agent_flow_table_capacity").set(stats.capacity)
    gauge("hostnat_agent_config_version_applied").set(stats.appliedVersion ?? 0)
  }

  /// Sets the edge's metrics from its loop counters.
  public func update(edge stats: EdgeDataplaneStats) {
    counter("hostnat_edge_received_packets_total").set(stats.received)
    counter("hostnat_edge_hairpinned_packets_total").set(stats.hairpinned)
    counter("hostnat_edge_dropped_unowned_packets_total").set(stats.droppedUnowned)
    counter("hostnat_edge_dropped_not_owner_packets_total").set(stats.droppedNotOwner)
    counter("hostnat_edge_ownership_recorder_overflow_total").set(stats.ownershipRecorderOverflow)
    counter("hostnat_edge_malformed_packets_total").set(stats.malformed)
    counter("hostnat_edge_vpc_packets_total", labels: [("result", "routed")]).set(stats.vpcRouted)
    counter("hostnat_edge_vpc_packets_total", labels: [("result", "unrouted")]).set(stats.vpcUnrouted)
    for (host, n) in stats.perHost {
      counter("hostnat_edge_routed_packets_total", labels: [("host", host)]).set(n)
    }
  }

  /// Sets the NAT log writer's counters.
  public func update(log writer: NATLogWriter) {
    let c = writer.counts
    counter("hostnat_agent_log_entries_written_total").set(c.written)
    counter("hostnat_agent_log_entries_skipped_total").set(c.skipped)
  }
}

extension MetricCatalog {
  /// Every value of the `reason` label of `hostnat_agent_dropped_packets_total`: the engine's
  /// `DropReason`s, then the packet loop's.
  public static let dropReasons: [String] = DropReason.allCases.map(\.cloudNATName) + loopDropReasons
}
