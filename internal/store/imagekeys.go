package store

// Keys of boot images (cluster-wide):
//
//	/vpool/images/<name>   model.Image
const ImagesPrefix = Root + "images/"

// ImageKey is the key of an image.
func ImageKey(name string) string { return ImagesPrefix + name }
