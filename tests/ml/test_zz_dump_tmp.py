import shutil
def test_dump(cp2k_graphene):
    src = cp2k_graphene(1)[0]
    shutil.copytree(src, "/tmp/cp2k_graphene_0", dirs_exist_ok=True)
