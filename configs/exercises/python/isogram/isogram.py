def is_isogram(string):
    raise NotImplementedError("implement is_isogram")
