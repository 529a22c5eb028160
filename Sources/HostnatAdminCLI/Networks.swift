import ArgumentParser
import HostnatProto
import SwiftProtobuf

/// `hostnat networks ...`
struct NetworksCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "networks", abstract: "VPC networks and their subnets.",
    subcommands: [Create.self, Update.self, Describe.self, List.self, Delete.self, SubnetsCommand.self, PeeringsCommand.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a network.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Network name.") var name: String
    @Option(help: "Free text.") var description: String?
    @Option(help: "Project that owns it (a Shared VPC host project for a shared network).") var project: String?
    @Option(help: "Private Google Access: the Google APIs range its NATed subnets reach without NAT.") var googleApisRange: String?

    func run() async throws {
      let session = AdminSession(command: "networks.create", global: global)
      let range = try session.check { () throws(CommandError) in try googleApisRange.map { r throws(CommandError) in try Parse.cidr(r, flag: "--google-apis-range") } }
      try await session.run { admin in
        let network = try await admin.createNetwork(
          .with {
            $0.network.name = name
            $0.network.description_p = description ?? ""
            $0.network.project = project ?? ""
            $0.network.googleApisRange = range ?? ""
          }, options: AdminSession.callOptions)
        Console.err("Created [networks/\(network.name)].\n")
        Render.networks([network], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Change a network's Google APIs range.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Private Google Access range (\"\" to remove).") var googleApisRange: String

    func run() async throws {
      let session = AdminSession(command: "networks.update", global: global)
      let range = try session.check { () throws(CommandError) in googleApisRange.isEmpty ? "" : try Parse.cidr(googleApisRange, flag: "--google-apis-range") }
      try await session.run { admin in
        let network = try await admin.updateNetwork(
          .with {
            $0.network.name = name
            $0.network.googleApisRange = range
            $0.updateMask = ["google_apis_range"]
          }, options: AdminSession.callOptions)
        Render.networks([network], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String

    func run() async throws {
      try await AdminSession(command: "networks.describe", global: global).run { admin in
        let network = try await admin.getNetwork(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.networks([network], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List networks.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
      try await AdminSession(command: "networks.list", global: global).run { admin in
        let response = try await admin.listNetworks(.init(), options: AdminSession.callOptions)
        Render.networks(response.networks, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a network without subnets or routers.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String

    func run() async throws {
      try await AdminSession(command: "networks.delete", global: global).run { admin in
        let response = try await admin.deleteNetwork(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.deleted("networks/\(name)", response, format: global.format)
      }
    }
  }
}

/// `hostnat networks subnets ...`
struct SubnetsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "subnets", abstract: "Regional subnets of a network.",
    subcommands: [Create.self, Update.self, Describe.self, List.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a subnet.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Subnet name.") var name: String
    @Option(help: "Network of the subnet.") var network: String
    @Option(help: "Region of the subnet.") var region: String
    @Option(help: "Primary range, a CIDR.") var range: String
    @Option(help: "Secondary ranges NAME=CIDR,... (repeatable).") var secondaryRange: [String] = []
    @Flag(help: "Enable Private Google Access.") var enablePrivateIpGoogleAccess = false

    func run() async throws {
      let session = AdminSession(command: "networks.subnets.create", global: global)
      let subnet = try session.check { () throws -> Hostnat_V1_Subnet in
        var subnet = Hostnat_V1_Subnet()
        subnet.name = name
        subnet.network = network
        subnet.region = try Parse.name(region, flag: "--region")
        subnet.ipCidrRange = try Parse.cidr(range, flag: "--range")
        subnet.privateIpGoogleAccess = enablePrivateIpGoogleAccess
        for item in Parse.commaList(secondaryRange) {
          let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
          guard parts.count == 2, !parts[0].isEmpty else {
            throw CommandError(flag: "--secondary-range", reason: "\"\(item)\" is not NAME=CIDR")
          }
          let cidr = try Parse.cidr(parts[1], flag: "--secondary-range")
          subnet.secondaryRanges.append(.with {
            $0.rangeName = parts[0]
            $0.ipCidrRange = cidr
          })
        }
        return subnet
      }
      try await session.run { admin in
        let created = try await admin.createSubnet(.with { $0.subnet = subnet }, options: AdminSession.callOptions)
        Console.err("Created [regions/\(created.region)/subnetworks/\(created.name)].\n")
        Render.subnets([created], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Turn Private Google Access on or off (it stays on while a NAT gateway translates the subnet).")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the subnet.") var region: String?
    @Flag(inversion: .prefixedNo, help: "Private Google Access.") var enablePrivateIpGoogleAccess: Bool

    func run() async throws {
      try await AdminSession(command: "networks.subnets.update", global: global).run { admin in
        let subnet = try await admin.updateSubnet(
          .with {
            $0.subnet.name = name
            $0.subnet.region = region ?? ""
            $0.subnet.privateIpGoogleAccess = enablePrivateIpGoogleAccess
            $0.updateMask = ["private_ip_google_access"]
          }, options: AdminSession.callOptions)
        Render.subnets([subnet], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a subnet.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the subnet.") var region: String?

    func run() async throws {
      try await AdminSession(command: "networks.subnets.describe", global: global).run { admin in
        let subnet = try await admin.getSubnet(.with { $0.name = name; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.subnets([subnet], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List subnets.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this network's subnets.") var network: String?
    @Option(help: "Only this region's subnets.") var region: String?

    func run() async throws {
      try await AdminSession(command: "networks.subnets.list", global: global).run { admin in
        let response = try await admin.listSubnets(
          .with { $0.network = network ?? ""; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.subnets(response.subnets, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a subnet without instances.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the subnet.") var region: String?

    func run() async throws {
      try await AdminSession(command: "networks.subnets.delete", global: global).run { admin in
        let response = try await admin.deleteSubnet(.with { $0.name = name; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.deleted("subnetworks/\(name)", response, format: global.format)
      }
    }
  }
}
