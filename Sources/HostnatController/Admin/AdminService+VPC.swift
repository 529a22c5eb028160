public import GRPCCore
import HostnatAddressing
import HostnatDesiredState
import SwiftProtobuf
public import HostnatProto

// The network around NAT: peerings and Private Google Access, firewall rules, routes, projects,
// and serverless egress (connectors and services).
extension AdminService {
  // MARK: Networks

  public func updateNetwork(request: Hostnat_V1_UpdateNetworkRequest, context: ServerContext) async throws -> Hostnat_V1_Network {
    try await rpc {
      var updated = Hostnat_V1_Network()
      try await core.change { intent in
        guard let index = intent.networks.firstIndex(where: { $0.name == request.network.name }) else {
          throw AdminError(.notFound, field: "network.name", reason: "network \(request.network.name) not found")
        }
        for path in request.updateMask.isEmpty ? ["peer_networks", "google_apis_range"] : request.updateMask {
          switch path {
          case "peer_networks": intent.networks[index].peerNetworks = request.network.peerNetworks
          case "google_apis_range": intent.networks[index].googleApisRange = request.network.googleApisRange
          default: throw AdminError(.invalidArgument, field: "updateMask", reason: "\(path) cannot be updated on a network")
          }
        }
        updated = intent.networks[index]
      }
      return updated
    }
  }

  // MARK: Firewall rules

  public func createFirewallRule(request: Hostnat_V1_CreateFirewallRuleRequest, context: ServerContext) async throws -> Hostnat_V1_FirewallRule {
    var rule = request.rule
    try await rpc {
      try IntentChecks.name(rule.name, field: "rule.name")
      try IntentChecks.nonEmpty(rule.network, field: "rule.network")
      if rule.direction == .unspecified { rule.direction = .ingress }
      try await core.change { intent in
        if intent.firewallRules.contains(where: { $0.name == rule.name }) {
          throw AdminError(.alreadyExists, field: "rule.name", reason: "firewall rule \(rule.name) already exists")
        }
        intent.firewallRules.append(rule)
      }
    }
    return rule
  }

  public func getFirewallRule(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_FirewallRule {
    try await rpc { try IntentChecks.find(core.intent.firewallRules, "firewall rule", request.name) { $0.name == request.name } }
  }

  public func listFirewallRules(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListFirewallRulesResponse {
    .with {
      $0.rules = core.intent.firewallRules.filter { request.network.isEmpty || $0.network == request.network }
        .sorted { ($0.network, $0.priority, $0.name) < ($1.network, $1.priority, $1.name) }
    }
  }

  public func deleteFirewallRule(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        _ = try IntentChecks.find(intent.firewallRules, "firewall rule", request.name) { $0.name == request.name }
        intent.firewallRules.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Routes

  public func createRoute(request: Hostnat_V1_CreateRouteRequest, context: ServerContext) async throws -> Hostnat_V1_Route {
    var route = request.route
    try await rpc {
      try IntentChecks.name(route.name, field: "route.name")
      try IntentChecks.nonEmpty(route.network, field: "route.network")
      try IntentChecks.nonEmpty(route.destRange, field: "route.destRange")
      if route.priority == 0 { route.priority = 1000 }
      try await core.change { intent in
        if intent.routes.contains(where: { $0.name == route.name }) {
          throw AdminError(.alreadyExists, field: "route.name", reason: "route \(route.name) already exists")
        }
        intent.routes.append(route)
      }
    }
    return route
  }

  public func getRoute(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Route {
    try await rpc { try IntentChecks.find(core.intent.routes, "route", request.name) { $0.name == request.name } }
  }

  public func listRoutes(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListRoutesResponse {
    .with {
      $0.routes = core.intent.routes.filter { request.network.isEmpty || $0.network == request.network }
        .sorted { ($0.network, $0.name) < ($1.network, $1.name) }
    }
  }

  public func deleteRoute(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        _ = try IntentChecks.find(intent.routes, "route", request.name) { $0.name == request.name }
        intent.routes.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Projects

  public func createProject(request: Hostnat_V1_CreateProjectRequest, context: ServerContext) async throws -> Hostnat_V1_Project {
    let project = request.project
    try await rpc {
      try IntentChecks.name(project.id, field: "project.id")
      if project.sharedVpcHost && !project.sharedVpcHostProject.isEmpty {
        throw AdminError(.invalidArgument, field: "project.sharedVpcHostProject", reason: "a Shared VPC host project cannot also be a service project")
      }
      try await core.change { intent in
        if intent.projects.contains(where: { $0.id == project.id }) {
          throw AdminError(.alreadyExists, field: "project.id", reason: "project \(project.id) already exists")
        }
        intent.projects.append(project)
      }
    }
    return project
  }

  public func listProjects(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListProjectsResponse {
    .with { $0.projects = core.intent.projects.sorted { $0.id < $1.id } }
  }

  // MARK: Serverless VPC Access connectors

  public func createServerlessConnector(
    request: Hostnat_V1_CreateServerlessConnectorRequest, context: ServerContext
  ) async throws -> Hostnat_V1_ServerlessConnector {
    var connector = request.connector
    return try await rpc {
      let hosts = try await agentHosts()
      try IntentChecks.name(connector.name, field: "connector.name")
      try IntentChecks.nonEmpty(connector.region, field: "connector.region")
      if connector.minInstances == 0 { connector.minInstances = 2 }
      if connector.maxInstances == 0 { connector.maxInstances = 10 }
      // Serverless VPC Access's bounds.
      guard (2...9).contains(connector.minInstances) else {
        throw AdminError(.invalidArgument, field: "connector.minInstances", reason: "\(connector.minInstances) is outside 2-9")
      }
      guard (3...10).contains(connector.maxInstances), connector.maxInstances > connector.minInstances else {
        throw AdminError(.invalidArgument, field: "connector.maxInstances", reason: "\(connector.maxInstances) must be in 3-10 and above min instances (\(connector.minInstances))")
      }
      connector.instances = []
      connector.state = ""
      try await core.change { intent in
        if intent.connectors.contains(where: { $0.name == connector.name && $0.region == connector.region }) {
          throw AdminError(.alreadyExists, field: "connector.name", reason: "connector \(connector.name) already exists in \(connector.region)")
        }
        if connector.subnet.isEmpty {
          try IntentChecks.nonEmpty(connector.network, field: "connector.network")
          try VPCChecks.cidr(connector.ipCidrRange, field: "connector.ipCidrRange")
          guard connector.ipCidrRange.hasSuffix("/28") else {
            throw AdminError(.invalidArgument, field: "connector.ipCidrRange", reason: "a connector needs a dedicated /28, not \(connector.ipCidrRange)")
          }
          _ = try IntentChecks.find(intent.networks, "network", connector.network, field: "connector.network") { $0.name == connector.network }
          let subnet = ServerlessModel.connectorSubnetName(connector.name)
          if intent.subnets.contains(where: { $0.name == subnet }) {
            throw AdminError(.alreadyExists, field: "connector.name", reason: "subnet \(subnet) already exists")
          }
          intent.subnets.append(.with {
            $0.name = subnet
            $0.network = connector.network
            $0.region = connector.region
            $0.ipCidrRange = connector.ipCidrRange
            $0.project = connector.project
            $0.createTimeMs = core.nowMsValue
          })
        } else {
          let subnet = try IntentChecks.find(intent.subnets, "subnet", connector.subnet, field: "connector.subnet") { $0.name == connector.subnet }
          guard subnet.ipCidrRange.hasSuffix("/28") else {
            throw AdminError(.invalidArgument, field: "connector.subnet", reason: "subnet \(subnet.name) is \(subnet.ipCidrRange); a connector needs a /28")
          }
          connector.network = subnet.network
          connector.ipCidrRange = subnet.ipCidrRange
        }
        intent.connectors.append(connector)
        try ServerlessModel.scaleConnectors(&intent, agentHosts: hosts)
        connector = intent.connectors.last!
      }
      return connector
    }
  }

  public func getServerlessConnector(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_ServerlessConnector {
    try await rpc {
      try find(core.intent.connectors, "connector", request)
    }
  }

  public func listServerlessConnectors(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListServerlessConnectorsResponse {
    .with {
      $0.connectors = listed(core.intent.connectors, request)
    }
  }

  public func deleteServerlessConnector(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        let c = try find(intent.connectors, "connector", request)
        let users = intent.services.filter { $0.vpcConnector == c.name && $0.region == c.region }.map(\.name)
        if !users.isEmpty {
          throw AdminError(.failedPrecondition, field: "name", reason: "connector \(c.name) is used by services \(users.joined(separator: ", "))")
        }
        intent.instances.removeAll { c.instances.contains($0.name) }
        intent.connectors.removeAll { $0.name == c.name && $0.region == c.region }
        if c.subnet.isEmpty { intent.subnets.removeAll { $0.name == ServerlessModel.connectorSubnetName(c.name) } }
      }
    }
  }

  // MARK: Serverless services

  public func deployService(request: Hostnat_V1_DeployServiceRequest, context: ServerContext) async throws -> Hostnat_V1_ServerlessService {
    var service = request.service
    return try await rpc {
      let hosts = try await agentHosts()
      try IntentChecks.name(service.name, field: "service.name")
      try IntentChecks.nonEmpty(service.region, field: "service.region")
      if service.instances == 0 { service.instances = 1 }
      guard service.instances <= 100 else {
        throw AdminError(.invalidArgument, field: "service.instances", reason: "\(service.instances) is above hostnat's 100 instances per service")
      }
      if service.vpcEgress == .unspecified { service.vpcEgress = .privateRangesOnly }
      let direct = !service.network.isEmpty || !service.subnet.isEmpty
      if direct && !service.vpcConnector.isEmpty {
        throw AdminError(.invalidArgument, field: "service.vpcConnector", reason: "use either --vpc-connector or --network/--subnet (Direct VPC egress), not both")
      }
      if direct && (service.network.isEmpty || service.subnet.isEmpty) {
        throw AdminError(.invalidArgument, field: service.network.isEmpty ? "service.network" : "service.subnet", reason: "Direct VPC egress needs both --network and --subnet")
      }
      service.vpcInstances = []
      service.createTimeMs = core.nowMsValue
      try await core.change { intent in
        let previous = intent.services.first { $0.name == service.name && $0.region == service.region }
        if let previous { intent.instances.removeAll { previous.vpcInstances.contains($0.name) } }
        intent.services.removeAll { $0.name == service.name && $0.region == service.region }
        if !service.vpcConnector.isEmpty {
          _ = try IntentChecks.find(intent.connectors, "connector", service.vpcConnector, field: "service.vpcConnector") {
            $0.name == service.vpcConnector && $0.region == service.region
          }
        }
        if direct {
          let subnet = try IntentChecks.find(intent.subnets, "subnet", service.subnet, field: "service.subnet") { $0.name == service.subnet }
          guard subnet.network == service.network else {
            throw AdminError(.invalidArgument, field: "service.subnet", reason: "subnet \(subnet.name) is in network \(subnet.network), not \(service.network)")
          }
          guard !hosts.isEmpty || !service.hosts.isEmpty else {
            throw AdminError(.failedPrecondition, field: "service.hosts", reason: "no agent host is known to place instances on; pass --hosts")
          }
          let placement = service.hosts.isEmpty ? hosts : service.hosts
          for k in 1...Int(service.instances) {
            let name = "\(service.name)-\(k)"
            if intent.instances.contains(where: { $0.name == name }) {
              throw AdminError(.alreadyExists, field: "service.name", reason: "instance \(name) already exists")
            }
            let ip = try IntentChecks.nextFreeIP(in: subnet, intent: intent, field: "service.subnet")
            intent.instances.append(.with {
              $0.name = name
              $0.region = service.region
              $0.host = placement[(k - 1) % placement.count]
              $0.project = service.project
              $0.networkInterfaces = [.with {
                $0.subnet = subnet.name
                $0.networkIp = ip
                $0.name = "nic0"
              }]
            })
            service.vpcInstances.append(name)
          }
        }
        // Ephemeral: the next free pool address after the one the previous deploy had.
        let used = Set(intent.services.map(\.serverlessEgressIp))
        let pool = ServerlessModel.egressPool
        let start = previous.flatMap { p in pool.firstIndex(of: p.serverlessEgressIp).map { $0 + 1 } } ?? 0
        guard let ip = (0..<pool.count).lazy.map({ pool[(start + $0) % pool.count] }).first(where: { !used.contains($0) }) else {
          throw AdminError(.failedPrecondition, field: "service", reason: "the serverless egress pool is exhausted")
        }
        service.serverlessEgressIp = ip
        intent.services.append(service)
        try ServerlessModel.scaleConnectors(&intent, agentHosts: hosts)
      }
      return service
    }
  }

  public func getService(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_ServerlessService {
    try await rpc {
      try find(core.intent.services, "service", request)
    }
  }

  public func listServices(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListServicesResponse {
    .with {
      $0.services = listed(core.intent.services, request)
    }
  }

  public func deleteService(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      let hosts = try await agentHosts()
      return try await deleting(request.name) { intent in
        let s = try find(intent.services, "service", request)
        intent.instances.removeAll { s.vpcInstances.contains($0.name) }
        intent.services.removeAll { $0.name == s.name && $0.region == s.region }
        try ServerlessModel.scaleConnectors(&intent, agentHosts: hosts)
      }
    }
  }

  /// Agent hosts the controller knows (said hello once, or run an instance), for placing the
  /// VMs it creates itself.
  func agentHosts() async throws -> [String] {
    let known = try await core.store.fetch { reader in try reader.hosts() }.filter { $0.kind == .agent }.map(\.hostID)
    return Array(Set(known + core.intent.instances.map(\.host))).sorted()
  }
}
