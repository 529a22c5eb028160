public import ArgumentParser
public import HostnatAddressing

// Addresses as flag types: every HOST:PORT and IP flag parses with the one parser of
// HostnatAddressing, and a malformed value is refused before the command runs.

extension SocketAddress: ExpressibleByArgument {
  /// "a.b.c.d:port"; "localhost:port" reads as 127.0.0.1.
  public init?(argument: String) {
    guard let address = try? SocketAddress.parse(argument, flag: "", allowPortZero: true) else { return nil }
    self = address
  }
}

extension IPv4Address: ExpressibleByArgument {
  public init?(argument: String) { self.init(argument) }
}
