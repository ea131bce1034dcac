import XCTest
final class NftTestsPlaceholder: XCTestCase { func testNothing() {} }
