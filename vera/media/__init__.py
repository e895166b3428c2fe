"""Media: files in and out: video, PNG and audio reading and writing (`video`), which frames of a
source are used (`clip`), OpenEXR layers (`exr`), run-folder names (`naming`), atomic writes
(`files`). Ground floor: PyAV, Pillow, OpenEXR; nothing else of vera."""
