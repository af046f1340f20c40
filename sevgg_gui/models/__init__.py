"""Models: the SE block and VGG16-SE (the article's architecture)."""
