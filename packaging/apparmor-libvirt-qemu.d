# ivserver's files for libvirt's QEMU, on libvirt versions whose
# abstraction includes abstractions/libvirt-qemu.d/ (older ones, such as
# Debian 12's, get the same include from ivserver's postinst, in
# /etc/apparmor.d/local/abstractions/libvirt-qemu).
  include <abstractions/ivserver-qemu>
