import XCTest
final class IptablesBackendTestsPlaceholder: XCTestCase { func testNothing() {} }
