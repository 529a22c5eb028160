import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatDataplane
import HostnatEngine
import HostnatPackets
import HostnatProto
import HostnatMetrics
import HostnatTelemetry
import Synchronization

/// An agent's NAT log and metrics: both fed from the data plane once a second, off the packet path.
final class AgentTelemetry: Sendable {
  let registry = TelemetryRegistry()
  /// Per VM: ports allocated and in use, as computed at the last tick (for the status file).
  let ports = Mutex<[String: VMPorts]>([:])
  let log: NATLogWriter
  let server: MetricsHTTPServer

  init(stateDir: String, hostID: String) throws {
    log = try NATLogWriter(path: stateDir + "/nat.log", host: hostID)
    server = MetricsHTTPServer(registry: registry)
  }

  /// Gateway and VPC names for each VM's log entries, from the snapshot in force.
  func setContext(_ config: Hostnat_V1_HostConfig) {
    var gateways: [String: Hostnat_V1_GatewayConfig] = [:]
    for gateway in config.gateways { gateways[gateway.key] = gateway }
    var contexts: [String: VMLogContext] = [:]
    for vm in config.vms {
      for nic in vm.nics {
        let id = ConfigTranslation.vmID(vm, nic)
        let gateway = nic.natBindings.first.flatMap { gateways[$0.gateway] }
        contexts[id] = VMLogContext(
          gateway: gateway?.name ?? "", router: gateway?.router ?? "", region: gateway?.region ?? "",
          network: nic.network, subnet: nic.subnet)
      }
    }
    log.setContext(contexts)
  }

  /// Drains the engine's log records into the NAT log and refreshes every metric from one
  /// snapshot of the data plane and its port usage (taken once per tick by the caller).
  func tick(stats: AgentDataplaneStats, usage: [PortDemand.Usage], log entries: [AgentLogEntry], link: ControlLinkStatus) {
    log.write(entries, now: DataplaneClock.now())
    registry.update(log: log)
    registry.update(agent: stats, gateways: Dictionary(usage.map { ($0.vmID, $0.gateway) }, uniquingKeysWith: { a, _ in a }))
    // Ports in use and port usage (most connections to one destination), as Cloud NAT defines them.
    var view: [String: VMPorts] = [:]
    for u in usage {
      let labels = [("vm", u.vmID), ("gateway", u.gateway)]
      registry.gauge("hostnat_agent_allocated_ports", labels: labels).set(u.allocated)
      registry.gauge("hostnat_agent_ports_in_use", labels: labels).set(u.inUse)
      registry.gauge("hostnat_agent_open_connections", labels: labels).set(u.openFlows)
      registry.gauge("hostnat_agent_port_usage", labels: labels).set(u.maxConnectionsToOneDestination)
      view[u.vmID] = VMPorts(allocated: u.allocated, inUse: u.inUse, natIPs: u.natIPs, flowsByNatIP: u.flowsByNatIP)
    }
    ports.withLock { $0 = view }
    registry.gauge("hostnat_agent_controller_connected").set(link.connected)
    let since = link.appliedAtMs > 0 ? Double(nowMs() - link.appliedAtMs) / 1000 : -1
    registry.gauge("hostnat_agent_seconds_since_last_config").set(since)
  }
}
