import IpvsModel
