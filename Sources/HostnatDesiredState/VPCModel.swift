public import HostnatAddressing
import SwiftProtobuf
public import HostnatProto

/// Whole-intent checks of the network around NAT: firewall rules, routes, projects (Shared VPC),
/// peerings and serverless resources. They run on every change after the edit and before the
/// planner, so a change that would leave a dangling reference is refused with the field.
public enum VPCChecks {
  /// Distinct target tags the rules of one network may name: the engine keeps one bit per tag
  /// (`CompiledPolicies.maxTargetTags` in HostnatEngine, which the controller does not link).
  public static let maxTargetTagsPerNetwork = 64

  public static func validate(_ intent: StoredIntent) throws {
    let networks = Dictionary(intent.networks.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    let projects = Dictionary(intent.projects.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    func project(_ id: String, field: String) throws {
      if !id.isEmpty, projects[id] == nil {
        throw AdminError(.notFound, field: field, reason: "project \(id) not found")
      }
    }
    func network(_ name: String, field: String) throws -> Hostnat_V1_Network {
      guard let network = networks[name] else {
        throw AdminError(.failedPrecondition, field: field, reason: name.isEmpty ? "required" : "network \(name) not found")
      }
      return network
    }
    for p in intent.projects where !p.sharedVpcHostProject.isEmpty {
      guard let host = projects[p.sharedVpcHostProject], host.sharedVpcHost else {
        throw AdminError(
          .failedPrecondition, field: "projects[\(p.id)].sharedVpcHostProject",
          reason: "\(p.sharedVpcHostProject) is not a Shared VPC host project")
      }
    }
    for n in intent.networks {
      try project(n.project, field: "networks[\(n.name)].project")
      for (i, peer) in n.peerNetworks.enumerated() {
        guard peer != n.name else {
          throw AdminError(.invalidArgument, field: "networks[\(n.name)].peerNetworks[\(i)]", reason: "a network cannot peer with itself")
        }
        _ = try network(peer, field: "networks[\(n.name)].peerNetworks[\(i)]")
      }
      if !n.googleApisRange.isEmpty {
        try cidr(n.googleApisRange, field: "networks[\(n.name)].googleApisRange")
      }
    }
    for s in intent.subnets { try project(s.project, field: "subnets[\(s.name)].project") }
    for r in intent.routers {
      try project(r.project, field: "routers[\(r.name)].project")
      let net = try network(r.network, field: "routers[\(r.name)].network")
      // Cloud NAT: "NAT gateways must be created in the host project of a Shared VPC network".
      if !r.project.isEmpty, r.project != net.project {
        throw AdminError(
          .failedPrecondition, field: "routers[\(r.name)].project",
          reason: "network \(net.name) belongs to project \(net.project.isEmpty ? "(default)" : net.project); its routers and NAT gateways must be created there (the Shared VPC host project), not in \(r.project)")
      }
    }
    let subnets = Dictionary(intent.subnets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    for i in intent.instances {
      try project(i.project, field: "instances[\(i.name)].project")
      for (index, nic) in i.networkInterfaces.enumerated() {
        guard let subnet = subnets[nic.subnet], let net = networks[subnet.network] else { continue }
        try attach(project: i.project, to: net, projects: projects, field: "instances[\(i.name)].networkInterfaces[\(index)]")
      }
    }
    var targetTags: [String: Set<String>] = [:]
    for (index, rule) in intent.firewallRules.enumerated() {
      let field = "firewallRules[\(rule.name.isEmpty ? String(index) : rule.name)]"
      _ = try network(rule.network, field: "\(field).network")
      if rule.priority > 65535 {
        throw AdminError(.invalidArgument, field: "\(field).priority", reason: "\(rule.priority) is outside 0-65535")
      }
      for (i, r) in rule.sourceRanges.enumerated() { try cidr(r, field: "\(field).sourceRanges[\(i)]") }
      for (i, r) in rule.destinationRanges.enumerated() { try cidr(r, field: "\(field).destinationRanges[\(i)]") }
      if rule.direction == .egress, !rule.sourceRanges.isEmpty {
        throw AdminError(.invalidArgument, field: "\(field).sourceRanges", reason: "an EGRESS rule matches destination ranges, not source ranges")
      }
      for (i, tag) in rule.targetTags.enumerated() { try IntentChecks.name(tag, field: "\(field).targetTags[\(i)]") }
      let named = targetTags[rule.network, default: []].union(rule.targetTags)
      targetTags[rule.network] = named
      if named.count > maxTargetTagsPerNetwork {
        throw AdminError(
          .invalidArgument, field: "\(field).targetTags",
          reason: "the firewall rules of network \(rule.network) would name \(named.count) distinct target tags; hosts tell at most \(maxTargetTagsPerNetwork) apart")
      }
      if rule.direction != .egress, !rule.destinationRanges.isEmpty {
        throw AdminError(.invalidArgument, field: "\(field).destinationRanges", reason: "an INGRESS rule matches source ranges, not destination ranges")
      }
      for (i, match) in rule.rules.enumerated() {
        if FirewallSpec.protocolNumber(match.ipProtocol) == nil {
          throw AdminError(
            .invalidArgument, field: "\(field).rules[\(i)].ipProtocol",
            reason: "\"\(match.ipProtocol)\" is not tcp, udp, icmp, all or a protocol number")
        }
        for (j, ports) in match.ports.enumerated() where FirewallSpec.portRange(ports) == nil {
          throw AdminError(
            .invalidArgument, field: "\(field).rules[\(i)].ports[\(j)]", reason: "\"\(ports)\" is not a port or a range like 8000-8080")
        }
        if !match.ports.isEmpty, !["tcp", "udp"].contains(match.ipProtocol.lowercased()) {
          throw AdminError(.invalidArgument, field: "\(field).rules[\(i)].ports", reason: "ports can only be given for tcp or udp")
        }
      }
    }
    let instanceNames = Set(intent.instances.map(\.name))
    for route in intent.routes {
      let field = "routes[\(route.name)]"
      _ = try network(route.network, field: "\(field).network")
      try cidr(route.destRange, field: "\(field).destRange")
      switch route.nextHop.hop {
      case .instance(let name):
        if !instanceNames.contains(name) {
          throw AdminError(.failedPrecondition, field: "\(field).nextHop.instance", reason: "instance \(name) not found")
        }
      case .vpnTunnel(let name):
        if name.isEmpty { throw AdminError(.invalidArgument, field: "\(field).nextHop.vpnTunnel", reason: "required") }
      case .defaultInternetGateway: break
      case nil: throw AdminError(.invalidArgument, field: "\(field).nextHop", reason: "required: --next-hop-gateway, --next-hop-instance or --next-hop-vpn-tunnel")
      }
    }
    for c in intent.connectors {
      try project(c.project, field: "connectors[\(c.name)].project")
      let net = try network(c.network, field: "connectors[\(c.name)].network")
      try attach(project: c.project, to: net, projects: projects, field: "connectors[\(c.name)]")
    }
  }

  /// Shared VPC: a resource of project P may use network N of project H only if P is H or P is
  /// a service project attached to H.
  static func attach(project p: String, to network: Hostnat_V1_Network, projects: [String: Hostnat_V1_Project], field: String) throws {
    let h = network.project
    if p.isEmpty || p == h { return }
    if let service = projects[p], service.sharedVpcHostProject == h, !h.isEmpty { return }
    throw AdminError(
      .failedPrecondition, field: "\(field).project",
      reason: "project \(p) cannot use network \(network.name) of project \(h.isEmpty ? "(default)" : h): it is not a Shared VPC service project of \(h.isEmpty ? "it" : h)")
  }

  /// A CIDR without host bits, as the API requires.
  public static func cidr(_ text: String, field: String) throws {
    guard let value = IPv4CIDR(text), text.contains("/") else {
      throw AdminError(.invalidArgument, field: field, reason: "\"\(text)\" is not a CIDR range a.b.c.d/n")
    }
    if "\(value)" != text {
      throw AdminError(.invalidArgument, field: field, reason: "\(text) has host bits set (the range is \(value))")
    }
  }
}

/// Serverless VPC Access and Cloud Run egress, derived from intent: the VMs the controller runs
/// for connectors and Direct VPC egress services, connector autoscaling, and where a service's
/// packets enter the network.
public enum ServerlessModel {
  /// Serverless instances one connector instance serves before the connector grows. Google
  /// scales connectors on throughput; hostnat's stand-in for load is the number of serverless
  /// instances sending through the connector, which a lab can change with `run deploy --instances`.
  public static let instancesPerConnectorInstance = 4
  /// Where the platform's own egress IPs come from, announced to the edge as direct clients. A
  /// documentation range outside the default auto-allocation pools (198.51.100.0/24), the
  /// reservable addresses (203.0.113.0/24) and the lab's servers; `--auto-nat-pool` refuses it.
  public static let egressRange = "192.0.2.192/26"
  /// Its host addresses, in the order deploys take them.
  public static let egressPool: [String] = {
    let range = IPv4CIDR(egressRange)!
    return ((range.first.value + 1)..<range.last.value).map { "\(IPv4Address($0))" }
  }()
  /// Cloud Run's RFC 1918 and RFC 6598 "private ranges".
  public static let privateRanges: [IPv4CIDR] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"].compactMap { IPv4CIDR($0) }

  /// The subnet a connector created with a range gets, as Google creates one for it.
  public static func connectorSubnetName(_ connector: String) -> String { "vpc-access-\(connector)" }

  /// Instance names of a connector's `count` instances.
  public static func connectorInstanceName(_ connector: String, _ index: Int) -> String { "\(connector)-\(index)" }

  /// Serverless instances sending through each connector ("region/name").
  public static func load(_ intent: StoredIntent) -> [String: Int] {
    var load: [String: Int] = [:]
    for s in intent.services where !s.vpcConnector.isEmpty {
      load["\(s.region)/\(s.vpcConnector)", default: 0] += Int(max(1, s.instances))
    }
    return load
  }

  /// The network tags Serverless VPC Access gives every instance of a connector, for firewall
  /// rules: `vpc-connector` (all connectors) and `vpc-connector-REGION-NAME` (this one).
  public static func connectorTags(_ c: Hostnat_V1_ServerlessConnector) -> [String] {
    ["vpc-connector", "vpc-connector-\(c.region)-\(c.name)"]
  }

  /// How many instances a connector runs for `load` serverless instances.
  public static func desiredInstances(_ c: Hostnat_V1_ServerlessConnector, load: Int) -> Int {
    let wanted = (load + instancesPerConnectorInstance - 1) / instancesPerConnectorInstance
    return min(Int(c.maxInstances), max(Int(c.minInstances), wanted))
  }

  /// Brings every connector's instances (VMs in its subnet) to what its load asks for. Added
  /// instances get the next free IPs of the connector's range and NAT ports like any VM;
  /// removed ones (the newest first) give their ports back through quarantine.
  public static func scaleConnectors(_ intent: inout StoredIntent, agentHosts: [String]) throws {
    let load = load(intent)
    for index in intent.connectors.indices {
      let c = intent.connectors[index]
      let key = "\(c.region)/\(c.name)"
      let want = desiredInstances(c, load: load[key] ?? 0)
      let subnetName = c.subnet.isEmpty ? connectorSubnetName(c.name) : c.subnet
      guard let subnet = intent.subnets.first(where: { $0.name == subnetName }) else {
        throw AdminError(.failedPrecondition, field: "connector.subnet", reason: "subnet \(subnetName) not found")
      }
      var names = c.instances
      while names.count > want {
        let name = names.removeLast()
        intent.instances.removeAll { $0.name == name }
      }
      let hosts = c.hosts.isEmpty ? agentHosts : c.hosts
      while names.count < want {
        guard !hosts.isEmpty else {
          throw AdminError(.failedPrecondition, field: "connector.hosts", reason: "no agent host is known to place connector instances on; pass --hosts")
        }
        var n = names.count + 1
        while intent.instances.contains(where: { $0.name == connectorInstanceName(c.name, n) }) || names.contains(connectorInstanceName(c.name, n)) { n += 1 }
        let name = connectorInstanceName(c.name, n)
        let ip = try IntentChecks.nextFreeIP(in: subnet, intent: intent, field: "connector.ipCidrRange")
        intent.instances.append(.with {
          $0.name = name
          $0.region = c.region
          $0.host = hosts[names.count % hosts.count]
          $0.project = c.project
          $0.networkInterfaces = [.with {
            $0.subnet = subnetName
            $0.networkIp = ip
            $0.name = "nic0"
          }]
        })
        names.append(name)
      }
      // Every instance of the connector carries its tags: new ones, and ones from before
      // connectors had tags.
      for i in intent.instances.indices where names.contains(intent.instances[i].name) {
        intent.instances[i].tags = connectorTags(c)
      }
      intent.connectors[index].instances = names
      intent.connectors[index].load = UInt32(load[key] ?? 0)
      intent.connectors[index].state = names.count >= Int(c.minInstances) ? "READY" : "CREATING"
    }
  }

  /// Where one request of a service instance to `destination` enters the network.
  public enum EgressPath: Equatable, Sendable {
    /// Through the connector: the packet leaves a connector instance (a VM, so NATed).
    case connector(instance: String)
    /// From a Direct VPC egress instance (a VM of the subnet).
    case vpcInstance(String)
    /// Straight from the serverless platform, with its ephemeral egress IP: no VPC, no NAT.
    case platform(egressIP: String)
  }

  /// Cloud Run's rule: with ALL_TRAFFIC everything enters the VPC; with PRIVATE_RANGES_ONLY only
  /// private destinations do, and the rest leaves from the platform. Instance `k` of a service
  /// uses connector instance `k mod n` (connectors spread their clients).
  public static func path(
    _ service: Hostnat_V1_ServerlessService, instance k: Int, to destination: IPv4Address,
    connector: Hostnat_V1_ServerlessConnector?
  ) -> EgressPath {
    let intoVPC = service.vpcEgress == .allTraffic || privateRanges.contains { $0.contains(destination) }
    if intoVPC, let connector, !connector.instances.isEmpty {
      return .connector(instance: connector.instances[k % connector.instances.count])
    }
    if intoVPC, !service.vpcInstances.isEmpty {
      return .vpcInstance(service.vpcInstances[k % service.vpcInstances.count])
    }
    return .platform(egressIP: service.serverlessEgressIp)
  }
}

/// Which subnets have Private Google Access in force.
public enum PrivateGoogleAccess {
  /// Subnets with Private Google Access in force: asked for, or forced on because a NAT gateway
  /// translates their primary range (Cloud NAT enables it and it cannot be turned off).
  public static func subnets(_ intent: StoredIntent) -> Set<String> {
    let natted = natPrimarySubnets(intent)
    return Set(intent.subnets.filter { $0.privateIpGoogleAccess || natted.contains($0.name) }.map(\.name))
  }

  /// A subnet as the API shows it: Private Google Access reads on while NAT forces it.
  public static func effective(_ subnet: Hostnat_V1_Subnet, _ intent: StoredIntent) -> Hostnat_V1_Subnet {
    var subnet = subnet
    if natPrimarySubnets(intent).contains(subnet.name) { subnet.privateIpGoogleAccess = true }
    return subnet
  }

  /// Subnets whose primary range some NAT gateway translates.
  public static func natPrimarySubnets(_ intent: StoredIntent) -> Set<String> {
    var result: Set<String> = []
    for router in intent.routers {
      let inScope = intent.subnets.filter { $0.network == router.network && $0.region == router.region }
      for nat in router.nats {
        switch nat.sourceSubnetworkIpRangesToNat {
        case .allSubnetworksAllIpRanges, .allSubnetworksAllPrimaryIpRanges:
          result.formUnion(inScope.map(\.name))
        case .listOfSubnetworks:
          for listed in nat.subnetworks
          where listed.sourceIpRangesToNat.isEmpty || listed.sourceIpRangesToNat.contains(.allIpRanges)
            || listed.sourceIpRangesToNat.contains(.primaryIpRange)
          {
            result.insert(listed.name)
          }
        default: break
        }
      }
    }
    return result
  }
}
