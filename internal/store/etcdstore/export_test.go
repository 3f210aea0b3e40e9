package etcdstore

// DefragDue is defragDue for the external tests.
var DefragDue = defragDue
