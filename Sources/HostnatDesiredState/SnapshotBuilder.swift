import HostnatAddressing
public import HostnatPlanner
public import HostnatProto
import SwiftProtobuf

/// Turns intent + the planner's allocations into what the data plane receives: one HostConfig
/// per host (only its own VMs) and the edge's routing table. Versions are not set here: the
/// caller assigns them inside the transaction that stores the result.
public enum SnapshotBuilder {
  /// Added to the longest idle timeout to get the ownership lease (control.proto rule 5), so a
  /// flow refreshed just before a host went silent has surely expired when the lease ends.
  public static let leaseMarginSec: UInt32 = 300

  /// The content of every host's config, keyed by host id. Every host that runs an instance is
  /// present, also when none of its VMs is NATed (it must still know them to drop their traffic).
  public static func hostConfigs(_ stored: StoredIntent, planner: NATPlanner) -> [String: Hostnat_V1_HostConfig] {
    let networkOfSubnet = Dictionary(stored.subnets.map { ($0.name, $0.network) }, uniquingKeysWith: { first, _ in first })
    let routerByKey = Dictionary(stored.routers.map { ("\($0.region)/\($0.name)", $0) }, uniquingKeysWith: { first, _ in first })
    let lease = ownershipLeaseSec(planner)
    let privateGoogleAccess = PrivateGoogleAccess.subnets(stored)
    var configs: [String: Hostnat_V1_HostConfig] = [:]
    for instance in stored.instances {
      let allocations = planner.allocations(instance: instance.name)
      var vm = Hostnat_V1_VmConfig()
      vm.instance = instance.name
      vm.tags = instance.tags
      for (index, nic) in instance.networkInterfaces.enumerated() {
        var config = Hostnat_V1_NicConfig()
        config.name = "nic\(index)"
        config.subnet = nic.subnet
        config.network = networkOfSubnet[nic.subnet] ?? ""
        config.primaryIp = nic.networkIp
        config.aliasRanges = nic.aliasIpRanges.map(\.ipCidrRange)
        config.externalIp = nic.externalIp
        config.natBindings = allocations.filter { $0.nic.nicIndex == index }.map(binding)
        config.privateGoogleAccess = privateGoogleAccess.contains(nic.subnet)
        vm.nics.append(config)
      }
      var host = configs[instance.host] ?? Hostnat_V1_HostConfig.with {
        $0.hostID = instance.host
        $0.ownershipLeaseSec = lease
      }
      host.vms.append(vm)
      configs[instance.host] = host
    }
    let fabricIDs = VPCFabric.ids(stored)
    // Each gateway's status once (it walks the planner's allocations), not once per host.
    var gatewayConfigs: [String: Hostnat_V1_GatewayConfig?] = [:]
    for (hostID, var config) in configs {
      let keys = Set(config.vms.flatMap { $0.nics.flatMap { $0.natBindings.map(\.gateway) } })
      config.gateways = keys.sorted().compactMap { key in
        if let known = gatewayConfigs[key] { return known }
        let built = planner.status(gateway: key).map { gatewayConfig(key: key, status: $0, routers: routerByKey) }
        gatewayConfigs[key] = built
        return built
      }
      // The VPC around the host's VMs: every network one of their NICs is in.
      let networks = Set(config.vms.flatMap { $0.nics.map(\.network) })
      config.firewallRules = stored.firewallRules.filter { networks.contains($0.network) }.sorted { ($0.network, $0.priority, $0.name) < ($1.network, $1.priority, $1.name) }
      config.routes = stored.routes.filter { networks.contains($0.network) }.sorted { ($0.network, $0.name) < ($1.network, $1.name) }
      for network in stored.networks where networks.contains(network.name) && !network.googleApisRange.isEmpty {
        config.googleApisRanges[network.name] = network.googleApisRange
      }
      config.vpcNetworks = VPCFabric.networks(networks, stored, ids: fabricIDs)
      configs[hostID] = config
    }
    return configs
  }

  /// The edge's routes: every NAT IP:port block (active and drained, since drained flows still
  /// get replies) to the host of the VM that holds it, and every external IP to its VM's host.
  public static func edgeConfig(
    _ stored: StoredIntent, planner: NATPlanner, underlays: [String: String]
  ) -> Hostnat_V1_EdgeConfig {
    var config = Hostnat_V1_EdgeConfig()
    // Private Google Access: replies from the Google APIs range come back to internal IPs.
    let pga = PrivateGoogleAccess.subnets(stored)
    let withGoogleRange = Set(stored.networks.filter { !$0.googleApisRange.isEmpty }.map(\.name))
    let networkOfSubnet = Dictionary(stored.subnets.map { ($0.name, $0.network) }, uniquingKeysWith: { first, _ in first })
    // A host that never said hello has no data plane to send to yet; its routes appear when it
    // connects (ControllerCore.refreshEdge), so the edge never holds a route without an address.
    for instance in stored.instances {
      guard let underlay = underlays[instance.host], !underlay.isEmpty else { continue }
      for allocation in planner.allocations(instance: instance.name) {
        let ruleRanges = allocation.ruleAllocations.flatMap { $0.natIpPortRanges + $0.drainNatIpPortRanges }
        for range in allocation.natIpPortRanges + allocation.drainNatIpPortRanges + ruleRanges {
          config.natRoutes.append(.with {
            $0.natIp = "\(range.natIp)"
            $0.firstPort = UInt32(range.firstPort)
            $0.count = UInt32(range.portCount)
            $0.hostID = instance.host
            $0.underlayAddress = underlay
          })
        }
      }
      for nic in instance.networkInterfaces {
        if !nic.externalIp.isEmpty {
          config.externalRoutes.append(.with {
            $0.externalIp = nic.externalIp
            $0.hostID = instance.host
            $0.underlayAddress = underlay
          })
        } else if pga.contains(nic.subnet), withGoogleRange.contains(networkOfSubnet[nic.subnet] ?? "") {
          config.privateGoogleAccessRoutes.append(.with {
            $0.externalIp = nic.networkIp
            $0.hostID = instance.host
            $0.underlayAddress = underlay
          })
        }
      }
    }
    config.privateGoogleAccessRoutes.sort { $0.externalIp < $1.externalIp }
    if !stored.services.isEmpty { config.directClientRanges = [ServerlessModel.egressRange] }
    config.vpcRoutes = VPCFabric.routes(stored, underlays: underlays, ids: VPCFabric.ids(stored))
    config.natRoutes.sort { ($0.natIp, $0.firstPort) < ($1.natIp, $1.firstPort) }
    config.externalRoutes.sort { $0.externalIp < $1.externalIp }
    return config
  }

  /// The longest idle timeout of any gateway plus the margin.
  public static func ownershipLeaseSec(_ planner: NATPlanner) -> UInt32 {
    let longest = planner.gatewayStatuses.map { status in
      let t = status.timeouts
      return max(t.udpIdleSec, t.icmpIdleSec, t.tcpEstablishedIdleSec, t.tcpTransitoryIdleSec, t.tcpTimeWaitSec)
    }.max() ?? NATTimeouts.defaults.tcpEstablishedIdleSec
    return UInt32(longest) + leaseMarginSec
  }

  static func binding(_ allocation: NICNATAllocation) -> Hostnat_V1_NicNatBinding {
    var binding = Hostnat_V1_NicNatBinding()
    binding.gateway = allocation.nic.gateway
    if let primary = allocation.sourceVirtualIp {
      binding.natSources.append(.with {
        $0.ipCidrRange = "\(primary)/32"
        $0.primary = true
      })
    }
    for alias in allocation.sourceAliasIpRanges {
      binding.natSources.append(.with { $0.ipCidrRange = alias })
    }
    binding.portBlocks =
      allocation.natIpPortRanges.map { block($0, drained: false) }
      + allocation.drainNatIpPortRanges.map { block($0, drained: true) }
    for rule in allocation.ruleAllocations {
      binding.portBlocks += rule.natIpPortRanges.map { block($0, drained: false, rule: rule.ruleNumber) }
        + rule.drainNatIpPortRanges.map { block($0, drained: true, rule: rule.ruleNumber) }
    }
    return binding
  }

  static func block(_ range: NATPortRange, drained: Bool, rule: Int = 0) -> Hostnat_V1_PortBlock {
    .with {
      $0.natIp = "\(range.natIp)"
      $0.firstPort = UInt32(range.firstPort)
      $0.count = UInt32(range.portCount)
      $0.drained = drained
      $0.ruleNumber = UInt32(rule)
    }
  }

  static func gatewayConfig(key: String, status: NATGatewayStatus, routers: [String: Hostnat_V1_Router]) -> Hostnat_V1_GatewayConfig {
    // Keys are "region/router/nat" (IntentMapping.gatewayKey).
    let parts = key.split(separator: "/", maxSplits: 2).map(String.init)
    var config = Hostnat_V1_GatewayConfig()
    config.key = key
    if parts.count == 3 {
      config.region = parts[0]
      config.router = parts[1]
      config.name = parts[2]
      let router = routers["\(parts[0])/\(parts[1])"]
      config.network = router?.network ?? ""
      // Hosts get each rule with its match as the planner compiled it (hosts never parse CEL).
      let compiled = Dictionary(status.ruleStatus.map { ($0.ruleNumber, $0.destinationRanges) }, uniquingKeysWith: { a, _ in a })
      if let nat = router?.nats.first(where: { $0.name == parts[2] }) {
        config.rules = nat.rules.sorted { $0.ruleNumber < $1.ruleNumber }.map { rule in
          var rule = rule
          rule.destinationRanges = compiled[Int(rule.ruleNumber)] ?? []
          return rule
        }
      }
    }
    config.timeouts = .with {
      $0.udpIdleTimeoutSec = UInt32(status.timeouts.udpIdleSec)
      $0.icmpIdleTimeoutSec = UInt32(status.timeouts.icmpIdleSec)
      $0.tcpEstablishedIdleTimeoutSec = UInt32(status.timeouts.tcpEstablishedIdleSec)
      $0.tcpTransitoryIdleTimeoutSec = UInt32(status.timeouts.tcpTransitoryIdleSec)
      $0.tcpTimeWaitTimeoutSec = UInt32(status.timeouts.tcpTimeWaitSec)
    }
    config.endpointIndependentMapping = status.enableEndpointIndependentMapping
    config.dynamicPortAllocation = status.enableDynamicPortAllocation
    config.minPortsPerVm = UInt32(status.minPortsPerVm)
    config.maxPortsPerVm = UInt32(status.maxPortsPerVm)
    config.logConfig = .with {
      $0.enable = status.logConfig.enable
      switch status.logConfig.filter {
      case .all: $0.filter = .all
      case .errorsOnly: $0.filter = .errorsOnly
      case .translationsOnly: $0.filter = .translationsOnly
      }
    }
    return config
  }
}
