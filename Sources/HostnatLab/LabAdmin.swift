import Foundation
import HostnatAddressing
public import GRPCCore
public import GRPCNIOTransportHTTP2
public import HostnatProto
import SwiftProtobuf

/// The lab's connection to the controller's admin API (the same API the CLI uses).
public struct LabAdmin: Sendable {
  public var host: String
  public var port: Int

  public init(controller: String) throws {
    do {
      let address = try SocketAddress.parse(controller, flag: "controller address")
      host = address.host
      port = Int(address.port)
    } catch {
      throw LabError(error.description)
    }
  }

  /// Runs `body` with an admin client. With `waitForReady`, calls wait for the controller to come
  /// (back) up instead of failing: the demo's change made while the controller is down.
  public func with<R: Sendable>(
    waitForReady: Bool = false,
    _ body: @Sendable (Hostnat_V1_AdminService.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> R
  ) async throws -> R {
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext)
    var options = CallOptions.defaults
    options.waitForReady = waitForReady
    options.timeout = waitForReady ? .seconds(60) : .seconds(5)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Hostnat_V1_AdminService.Client(wrapping: client), options)
    }
  }

  /// Polls until the controller answers, or throws after `timeout`.
  public func waitUntilServing(timeout: Duration) async throws {
    let deadline = ContinuousClock.now + timeout
    var lastError = ""
    while ContinuousClock.now < deadline {
      do {
        _ = try await with { admin, options in try await admin.listHosts(.init(), options: options) }
        return
      } catch {
        lastError = "\(error)"
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw LabError("controller \(host):\(port) did not answer within \(timeout): \(lastError)")
  }

  /// Changes the fields of a NAT gateway named in `mask` (proto field names) to what `edit` sets.
  /// With `waitForReady`, waits for a controller that is down to come back.
  @discardableResult
  public func updateNat(
    region: String, router: String = "router-1", nat: String = "nat-1", mask: [String], waitForReady: Bool = false,
    _ edit: @escaping @Sendable (inout Hostnat_V1_NatGateway) -> Void
  ) async throws -> Hostnat_V1_NatGateway {
    try await with(waitForReady: waitForReady) { client, options in
      try await client.updateNat(.with {
        $0.region = region
        $0.router = router
        $0.nat.name = nat
        edit(&$0.nat)
        $0.updateMask = mask
      }, options: options)
    }
  }

  public func hosts() async throws -> [Hostnat_V1_HostStatus] {
    try await with { admin, options in try await admin.listHosts(.init(), options: options).hosts }
  }

  /// Creates everything the topology names, in dependency order. Stops at the first rejection,
  /// with the resource and the controller's reason.
  public func apply(_ topology: Topology) async throws {
    try await with { admin, options in
      func step<T>(_ what: String, _ call: () async throws -> T) async throws {
        do { _ = try await call() } catch let error as RPCError {
          throw LabError("\(what): \(error.code): \(error.message)")
        }
      }
      let region = topology.region
      for network in topology.networks {
        try await step("network \(network.name)") {
          try await admin.createNetwork(.with {
            $0.network.name = network.name
            $0.network.googleApisRange = network.googleApisRange ?? ""
          }, options: options)
        }
        for subnet in network.subnets {
          try await step("subnet \(subnet.name)") {
            try await admin.createSubnet(.with {
              $0.subnet = .with {
                $0.name = subnet.name
                $0.network = network.name
                $0.region = subnet.region ?? region
                $0.ipCidrRange = subnet.range
              }
            }, options: options)
          }
        }
      }
      for address in topology.addresses ?? [] {
        try await step("address \(address.name)") {
          try await admin.createAddress(.with {
            $0.address = .with {
              $0.name = address.name
              $0.region = address.region ?? region
              if let ip = address.address { $0.address = ip }
            }
          }, options: options)
        }
      }
      for router in topology.routers ?? [] {
        let routerRegion = router.region ?? region
        try await step("router \(router.name)") {
          try await admin.createRouter(.with {
            $0.router = .with { $0.name = router.name; $0.network = router.network; $0.region = routerRegion }
          }, options: options)
        }
        for nat in router.nats ?? [] {
          try await step("nat \(nat.name)") {
            try await admin.createNat(.with {
              $0.region = routerRegion
              $0.router = router.name
              $0.nat = Self.gateway(nat)
            }, options: options)
          }
        }
      }
      for instance in topology.instances {
        try await step("instance \(instance.name)") {
          try await admin.createInstance(.with {
            $0.instance = .with {
              $0.name = instance.name
              $0.host = instance.host
              $0.networkInterfaces = [.with {
                $0.subnet = instance.subnet
                if let ip = instance.ip { $0.networkIp = ip }
                if let external = instance.externalIp { $0.externalIp = external }
              }]
            }
          }, options: options)
        }
      }
      for connector in topology.connectors ?? [] {
        try await step("connector \(connector.name)") {
          try await admin.createServerlessConnector(.with {
            $0.connector = .with {
              $0.name = connector.name
              $0.region = region
              $0.network = connector.network
              $0.ipCidrRange = connector.range
              $0.minInstances = connector.minInstances ?? 2
              $0.maxInstances = connector.maxInstances ?? 10
              $0.hosts = connector.hosts ?? topology.hosts
            }
          }, options: options)
        }
      }
      for service in topology.services ?? [] {
        try await step("service \(service.name)") {
          try await admin.deployService(.with {
            $0.service = .with {
              $0.name = service.name
              $0.region = region
              $0.instances = service.instances ?? 1
              $0.vpcConnector = service.connector ?? ""
              $0.vpcEgress = service.egress == "all-traffic" ? .allTraffic : .privateRangesOnly
              $0.network = service.network ?? ""
              $0.subnet = service.subnet ?? ""
              if service.subnet != nil { $0.hosts = topology.hosts }
            }
          }, options: options)
        }
      }
    }
  }

  static func gateway(_ nat: Topology.NAT) -> Hostnat_V1_NatGateway {
    .with {
      $0.name = nat.name
      if let subnets = nat.subnets {
        $0.sourceSubnetworkIpRangesToNat = .listOfSubnetworks
        $0.subnetworks = subnets.map { name in .with { $0.name = name; $0.sourceIpRangesToNat = [.allIpRanges] } }
      } else {
        $0.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges
      }
      if let ips = nat.natIps {
        $0.natIpAllocateOption = .manualOnly
        $0.natIps = ips
      } else {
        $0.natIpAllocateOption = .autoOnly
      }
      if let min = nat.minPortsPerVm { $0.minPortsPerVm = min }
      if let max = nat.maxPortsPerVm { $0.maxPortsPerVm = max }
      if let eim = nat.endpointIndependentMapping { $0.enableEndpointIndependentMapping = eim }
      if let udp = nat.udpIdleTimeoutSec { $0.timeouts.udpIdleTimeoutSec = udp }
      if let filter = nat.logging {
        $0.logConfig.enable = true
        $0.logConfig.filter =
          switch filter.uppercased() {
          case "ERRORS_ONLY": .errorsOnly
          case "TRANSLATIONS_ONLY": .translationsOnly
          default: .all
          }
      }
    }
  }
}
